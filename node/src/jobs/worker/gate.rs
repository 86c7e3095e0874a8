//! Whether a worker takes a round start it was sent. A pure decision over
//! what the worker is training and what it last trained, so that a
//! coordinator that restarted and re-sends its open round gets the work it
//! asked for the first time, instead of a refusal that would count the
//! worker as missed and drop it from the job.

use fairgrid_protocol::Hash32;

/// One piece of work: a round, from given parameters, under a given
/// allocation. A re-sent start of the same round names the same key; a
/// re-cleared round (other allocation) or another round does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundKey {
    pub round: u32,
    pub allocation: Hash32,
    pub params_hash: Hash32,
}

/// What to do with a round start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Train the round.
    Train,
    /// This exact round is being trained: accept, and the running training
    /// delivers its update.
    AlreadyTraining,
    /// This exact round was trained already: accept, and send the same
    /// update again (training again would apply the compressor's
    /// error-feedback residual twice).
    Resend,
    /// Refuse, saying why.
    Refuse(String),
}

/// `training` is the round in progress, `trained` the round whose update
/// is kept for resending.
pub fn admit(training: Option<RoundKey>, trained: Option<RoundKey>, start: RoundKey) -> Admit {
    match training {
        Some(current) if current == start => Admit::AlreadyTraining,
        Some(current) => Admit::Refuse(format!(
            "still training round {} (asked for round {})",
            current.round, start.round
        )),
        None if trained == Some(start) => Admit::Resend,
        None => Admit::Train,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(round: u32, allocation: &[u8], params: &[u8]) -> RoundKey {
        RoundKey {
            round,
            allocation: Hash32::of(allocation),
            params_hash: Hash32::of(params),
        }
    }

    #[test]
    fn a_new_round_is_trained() {
        assert_eq!(admit(None, None, key(0, b"a", b"p")), Admit::Train);
        assert_eq!(
            admit(None, Some(key(0, b"a", b"p")), key(1, b"a", b"q")),
            Admit::Train
        );
    }

    #[test]
    fn the_same_round_sent_again_is_accepted_not_refused() {
        let k = key(3, b"a", b"p");
        assert_eq!(admit(Some(k), None, k), Admit::AlreadyTraining);
        assert_eq!(admit(None, Some(k), k), Admit::Resend);
        // Training the same round again wins over an older kept update.
        assert_eq!(
            admit(Some(k), Some(key(2, b"a", b"o")), k),
            Admit::AlreadyTraining
        );
    }

    #[test]
    fn another_round_while_training_is_refused_with_both_rounds_named() {
        let Admit::Refuse(why) = admit(Some(key(3, b"a", b"p")), None, key(4, b"a", b"q")) else {
            panic!("should refuse");
        };
        assert!(why.contains("round 3") && why.contains("round 4"), "{why}");
    }

    #[test]
    fn the_same_round_under_another_allocation_or_parameters_is_new_work() {
        let trained = key(3, b"a", b"p");
        // Re-cleared: same round and parameters, other shards.
        assert_eq!(admit(None, Some(trained), key(3, b"b", b"p")), Admit::Train);
        assert_eq!(admit(None, Some(trained), key(3, b"a", b"x")), Admit::Train);
        assert!(matches!(
            admit(Some(trained), None, key(3, b"b", b"p")),
            Admit::Refuse(_)
        ));
    }
}
