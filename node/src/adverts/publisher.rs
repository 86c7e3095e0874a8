//! Issues this node's signed capacity adverts: a new one when none is live,
//! when the re-issue point of the current one has passed, or when what the
//! node offers changed (idle hours starting or ending). Time is an input.

use fairgrid_protocol::messages::{CapacityAdvert, Hardware, Reach};
use fairgrid_protocol::{Keypair, OwnerCertificate, ResourceVec, Signed};

use crate::config::OfferConfig;

/// The UTC hours during which capacity is offered, e.g. "22-07".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleHours {
    pub start: u32,
    pub end: u32,
}

impl IdleHours {
    /// Empty text means "always".
    pub fn parse(text: &str) -> Result<Option<IdleHours>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not of the form START-END, e.g. 22-07"))?;
        let hour = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|h| *h <= 24)
                .ok_or_else(|| format!("{s:?} is not an hour 0..=24"))
        };
        let (start, end) = (hour(a)?, hour(b)?);
        if start == end || start == 24 {
            return Err(format!("{text:?} is an empty window"));
        }
        Ok(Some(IdleHours { start, end }))
    }

    pub fn contains(&self, unix_ms: u64) -> bool {
        let hour = ((unix_ms / 3_600_000) % 24) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&hour)
        } else {
            hour >= self.start || hour < self.end
        }
    }
}

pub struct AdvertPublisher {
    key: Keypair,
    cert: Option<Signed<OwnerCertificate>>,
    cert_max: Option<ResourceVec>,
    hardware: Hardware,
    offer: OfferConfig,
    idle: Option<IdleHours>,
    lifetime_ms: u64,
    reissue_after_ms: u64,
    current: Option<(CapacityAdvert, Signed<CapacityAdvert>)>,
    /// How the node can be reached, for the next advert.
    reach: Reach,
}

impl AdvertPublisher {
    pub fn new(
        key: Keypair,
        cert: Option<Signed<OwnerCertificate>>,
        cert_max: Option<ResourceVec>,
        hardware: Hardware,
        offer: OfferConfig,
        lifetime_ms: u64,
        reissue_after_percent: u32,
    ) -> Result<Self, String> {
        let idle = IdleHours::parse(&offer.idle_hours)?;
        Ok(AdvertPublisher {
            key,
            cert,
            cert_max,
            hardware,
            offer,
            idle,
            lifetime_ms,
            reissue_after_ms: lifetime_ms * u64::from(reissue_after_percent) / 100,
            current: None,
            reach: Reach::Unknown,
        })
    }

    pub fn hardware(&self) -> &Hardware {
        &self.hardware
    }

    /// What the node offers at `now`: the configured share of the hardware,
    /// bounded by the certificate, nothing outside idle hours.
    pub fn offered(&self, now: u64) -> ResourceVec {
        if let Some(idle) = self.idle
            && !idle.contains(now)
        {
            return ResourceVec::default();
        }
        let hw = &self.hardware;
        let cores = match self.offer.cpu_cores {
            0 => hw.cpu_cores,
            n => n.min(hw.cpu_cores),
        };
        let mem = match self.offer.memory_mib {
            0 => hw.mem_mib * 8 / 10,
            n => n.min(hw.mem_mib),
        };
        let gpus = match self.offer.gpus {
            0 => hw.gpus.len() as u64,
            n => u64::from(n).min(hw.gpus.len() as u64),
        };
        let gpu_mem = hw.gpus.iter().take(gpus as usize).map(|g| g.mem_mib).sum();
        let offered = ResourceVec {
            cpu_milli: u64::from(cores) * 1000,
            mem_mib: mem,
            gpu_milli: gpus * 1000,
            gpu_mem_mib: gpu_mem,
        };
        match &self.cert_max {
            Some(max) => ResourceVec::min(&offered, max),
            None => offered,
        }
    }

    /// How the node can be reached from now on: a change makes a new
    /// advert due.
    pub fn set_reach(&mut self, reach: Reach) {
        self.reach = reach;
    }

    /// Whether a new advert should be issued at `now`.
    pub fn due(&self, now: u64) -> bool {
        match &self.current {
            None => true,
            Some((advert, _)) => {
                now >= advert.issued_at.saturating_add(self.reissue_after_ms)
                    || self.offered(now) != advert.offered
                    || self.reach != advert.reach
            }
        }
    }

    /// Signs a new advert at `now` with a seq above every earlier one (the
    /// clock in ms, so it also rises across restarts).
    pub fn issue(&mut self, now: u64) -> Signed<CapacityAdvert> {
        let seq = match &self.current {
            Some((prev, _)) => now.max(prev.seq + 1),
            None => now,
        };
        let advert = CapacityAdvert {
            node: self.key.node_id(),
            owner_cert: self.cert.clone(),
            hardware: self.hardware.clone(),
            offered: self.offered(now),
            price_floor: self.offer.price_floor,
            seq,
            issued_at: now,
            expires_at: now + self.lifetime_ms,
            reach: self.reach,
        };
        let signed = Signed::sign(&self.key, &advert);
        self.current = Some((advert, signed.clone()));
        signed
    }

    /// Forces a re-issue at the next `due` check (e.g. a publish failed).
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    pub fn current(&self) -> Option<&CapacityAdvert> {
        self.current.as_ref().map(|(a, _)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(idle: &str) -> AdvertPublisher {
        AdvertPublisher::new(
            Keypair::from_seed(b"pub"),
            None,
            Some(ResourceVec {
                cpu_milli: 2000,
                mem_mib: 1_000_000,
                ..Default::default()
            }),
            Hardware {
                cpu_cores: 8,
                cpu_gflops: 100,
                mem_mib: 1000,
                gpus: Vec::new(),
            },
            OfferConfig {
                idle_hours: idle.into(),
                price_floor: 5,
                ..Default::default()
            },
            10_000,
            50,
        )
        .unwrap()
    }

    #[test]
    fn reissues_before_expiry_with_rising_seq() {
        let mut p = publisher("");
        assert!(p.due(1_000));
        let first = p.issue(1_000);
        let (_, a) = first.verify_and_decode().unwrap();
        assert_eq!((a.seq, a.expires_at, a.price_floor), (1_000, 11_000, 5));
        assert_eq!(a.offered.cpu_milli, 2000, "bounded by the certificate");
        assert_eq!(a.offered.mem_mib, 800);
        assert!(!p.due(5_999));
        assert!(p.due(6_000));
        // A clock that went backwards still gives a higher seq.
        let (_, b) = p.issue(500).verify_and_decode().unwrap();
        assert_eq!(b.seq, 1_001);
        CapacityAdvert::check(&first, 2_000).unwrap();
    }

    #[test]
    fn a_change_of_reach_is_advertised_at_once() {
        let mut p = publisher("");
        let (_, first) = p.issue(1_000).verify_and_decode().unwrap();
        assert_eq!(first.reach, Reach::Unknown);
        p.set_reach(Reach::Unknown);
        assert!(!p.due(1_001));
        p.set_reach(Reach::Relayed);
        assert!(p.due(1_001));
        let (_, second) = p.issue(1_001).verify_and_decode().unwrap();
        assert_eq!(second.reach, Reach::Relayed);
        assert!(!p.due(1_002));
    }

    #[test]
    fn idle_hours_change_the_offer_and_trigger_a_reissue() {
        let mut p = publisher("22-07");
        let hour = 3_600_000;
        let at_23 = 23 * hour;
        let at_noon = 24 * hour + 12 * hour;
        assert!(!p.offered(at_23).is_zero());
        assert!(p.offered(at_noon).is_zero());
        p.issue(at_23);
        assert!(p.due(at_noon), "offer changed");
        assert!(IdleHours::parse("7-7").is_err());
        assert!(IdleHours::parse("25-3").is_err());
        assert!(IdleHours::parse("x").is_err());
        assert_eq!(IdleHours::parse("").unwrap(), None);
        let day = IdleHours::parse("9-17").unwrap().unwrap();
        assert!(day.contains(10 * hour) && !day.contains(17 * hour));
    }
}
