//! One-time login links for the dashboard (`fairgrid ui`). A link carries
//! a random code in its URL fragment, which browsers never send to a
//! server, so neither the code nor the token ends up in access logs or
//! proxies. The page trades the code for the API token once; a code is
//! good for [`LINK_TTL`] and is forgotten when used or expired.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a link can be opened.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// Links outstanding at once; minting more drops the oldest.
pub const MAX_LINKS: usize = 16;

#[derive(Debug, Default)]
pub struct OneTimeLinks {
    codes: VecDeque<(String, Instant)>,
}

impl OneTimeLinks {
    /// A fresh code (128 random bits, hex), valid until `now + LINK_TTL`.
    pub fn mint(&mut self, now: Instant) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let code = hex::encode(bytes);
        self.forget_expired(now);
        if self.codes.len() == MAX_LINKS {
            self.codes.pop_front();
        }
        self.codes.push_back((code.clone(), now + LINK_TTL));
        Ok(code)
    }

    /// Takes `code` if it is outstanding and unexpired: true once per code.
    pub fn redeem(&mut self, code: &str, now: Instant) -> bool {
        self.forget_expired(now);
        let found = self
            .codes
            .iter()
            .position(|(c, _)| super::super::constant_time_eq(c.as_bytes(), code.as_bytes()));
        match found {
            Some(i) => {
                self.codes.remove(i);
                true
            }
            None => false,
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        self.codes.retain(|(_, until)| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once() {
        let mut links = OneTimeLinks::default();
        let now = Instant::now();
        let code = links.mint(now).unwrap();
        assert_eq!(code.len(), 32);
        assert!(!links.redeem("not-a-code", now));
        assert!(links.redeem(&code, now));
        assert!(!links.redeem(&code, now), "a code is good once");
    }

    #[test]
    fn a_code_expires() {
        let mut links = OneTimeLinks::default();
        let now = Instant::now();
        let code = links.mint(now).unwrap();
        assert!(!links.redeem(&code, now + LINK_TTL));
    }

    #[test]
    fn minting_past_the_limit_drops_the_oldest() {
        let mut links = OneTimeLinks::default();
        let now = Instant::now();
        let first = links.mint(now).unwrap();
        let rest: Vec<String> = (0..MAX_LINKS).map(|_| links.mint(now).unwrap()).collect();
        assert!(!links.redeem(&first, now));
        assert!(rest.iter().all(|c| links.redeem(c, now)));
    }
}
