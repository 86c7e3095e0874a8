//! When the owner needs the machine back: a pure decision over what the
//! probes observed, with a calm period before contributing again so that a
//! user who pauses for a few seconds does not see jobs come and go.

/// The owner's policy (`[offer]` in the config); `None` turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Contribute only after the user has been idle this long.
    pub user_idle_secs: Option<u64>,
    /// Stop when programs other than fairgrid use more than this share
    /// of the machine's CPU.
    pub max_other_cpu_percent: Option<u32>,
    /// Stop when a program other than fairgrid uses an offered GPU.
    pub yield_gpus: bool,
    /// How long every rule must hold before contributing again.
    pub resume_after_secs: u64,
}

/// One look at the machine. `None`: the probe cannot tell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub user_idle_secs: Option<u64>,
    pub other_cpu_percent: Option<f32>,
    /// What else runs on the offered GPUs (empty: nothing).
    pub gpu_users: Option<Vec<super::gpu::GpuUser>>,
}

/// A change the node must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Stop training and withdraw from every job, for this reason.
    Busy(String),
    /// Offer again.
    Idle,
}

#[derive(Debug, Clone)]
pub struct Gate {
    policy: IdlePolicy,
    busy: Option<String>,
    /// Since when every rule has held, while busy.
    calm_since: Option<u64>,
}

impl Gate {
    pub fn new(policy: IdlePolicy) -> Gate {
        Gate {
            policy,
            busy: None,
            calm_since: None,
        }
    }

    /// Why the node does not contribute now, if it does not.
    pub fn busy(&self) -> Option<&str> {
        self.busy.as_deref()
    }

    /// Why `seen` means the owner needs the machine, if it does.
    fn reason(&self, seen: &Observation) -> Option<String> {
        if let (Some(need), Some(idle)) = (self.policy.user_idle_secs, seen.user_idle_secs)
            && idle < need
        {
            return Some(format!(
                "the user was active {idle} s ago (offer.user_idle_secs = {need})"
            ));
        }
        if let (Some(max), Some(used)) = (self.policy.max_other_cpu_percent, seen.other_cpu_percent)
            && used > max as f32
        {
            return Some(format!(
                "other programs use {used:.0}% of the CPU (offer.max_other_cpu_percent = {max})"
            ));
        }
        if self.policy.yield_gpus
            && let Some(first) = seen.gpu_users.as_ref().and_then(|u| u.first())
        {
            return Some(format!("{} (offer.yield_gpus)", first.describe()));
        }
        None
    }

    /// Takes an observation made at `now` (ms); returns the change to act
    /// on, if any. Busy at once; idle again only after the calm period.
    pub fn observe(&mut self, now: u64, seen: &Observation) -> Option<Change> {
        match (self.reason(seen), &self.busy) {
            (Some(reason), None) => {
                self.busy = Some(reason.clone());
                self.calm_since = None;
                Some(Change::Busy(reason))
            }
            (Some(reason), Some(_)) => {
                // Still busy; the reason shown follows what is seen.
                self.busy = Some(reason);
                self.calm_since = None;
                None
            }
            (None, None) => None,
            (None, Some(_)) => {
                let since = *self.calm_since.get_or_insert(now);
                if now.saturating_sub(since) >= self.policy.resume_after_secs * 1000 {
                    self.busy = None;
                    self.calm_since = None;
                    Some(Change::Idle)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> IdlePolicy {
        IdlePolicy {
            user_idle_secs: Some(300),
            max_other_cpu_percent: Some(25),
            yield_gpus: true,
            resume_after_secs: 60,
        }
    }

    fn seen(idle: u64, cpu: f32) -> Observation {
        Observation {
            user_idle_secs: Some(idle),
            other_cpu_percent: Some(cpu),
            gpu_users: Some(Vec::new()),
        }
    }

    #[test]
    fn a_user_at_the_keyboard_takes_the_machine_back_at_once() {
        let mut gate = Gate::new(policy());
        assert_eq!(gate.observe(0, &seen(600, 5.0)), None);
        let Some(Change::Busy(why)) = gate.observe(250, &seen(2, 5.0)) else {
            panic!("should be busy");
        };
        assert!(why.contains("active 2 s ago"), "{why}");
        assert_eq!(gate.busy(), Some(why.as_str()));
    }

    #[test]
    fn other_programs_above_the_share_take_it_back_too() {
        let mut gate = Gate::new(policy());
        let Some(Change::Busy(why)) = gate.observe(0, &seen(600, 40.0)) else {
            panic!("should be busy");
        };
        assert!(why.contains("40% of the CPU"), "{why}");
        assert_eq!(gate.observe(250, &seen(600, 25.0)), None, "25% is allowed");
    }

    #[test]
    fn another_program_on_a_gpu_takes_the_machine_back_until_it_leaves() {
        let mut gate = Gate::new(policy());
        let on_gpu = Observation {
            gpu_users: Some(vec![super::super::gpu::GpuUser {
                gpu: 0,
                pid: 4242,
                name: Some("python3".into()),
            }]),
            ..seen(600, 0.0)
        };
        let Some(Change::Busy(why)) = gate.observe(0, &on_gpu) else {
            panic!("should be busy");
        };
        assert_eq!(
            why,
            "GPU 0 is used by python3 (pid 4242) (offer.yield_gpus)"
        );
        assert_eq!(gate.observe(30_000, &seen(600, 0.0)), None);
        assert_eq!(gate.observe(90_000, &seen(600, 0.0)), Some(Change::Idle));
        let mut lenient = Gate::new(IdlePolicy {
            yield_gpus: false,
            ..policy()
        });
        assert_eq!(lenient.observe(0, &on_gpu), None, "the rule is off");
    }

    #[test]
    fn contributing_again_waits_for_a_calm_period_that_any_activity_restarts() {
        let mut gate = Gate::new(policy());
        gate.observe(0, &seen(0, 0.0));
        assert_eq!(gate.observe(1_000, &seen(600, 0.0)), None);
        assert_eq!(gate.observe(30_000, &seen(600, 0.0)), None);
        // Activity again: the minute starts over.
        assert_eq!(gate.observe(40_000, &seen(1, 0.0)), None);
        assert_eq!(gate.observe(41_000, &seen(600, 0.0)), None);
        assert_eq!(gate.observe(100_000, &seen(600, 0.0)), None);
        assert_eq!(gate.observe(101_000, &seen(600, 0.0)), Some(Change::Idle));
        assert_eq!(gate.busy(), None);
    }

    #[test]
    fn rules_that_are_off_or_unknown_never_make_it_busy() {
        let mut off = Gate::new(IdlePolicy {
            user_idle_secs: None,
            max_other_cpu_percent: None,
            yield_gpus: false,
            resume_after_secs: 0,
        });
        assert_eq!(off.observe(0, &seen(0, 100.0)), None);
        let mut unknown = Gate::new(policy());
        assert_eq!(unknown.observe(0, &Observation::default()), None);
    }
}
