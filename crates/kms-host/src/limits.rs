//! Per-source connection accounting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts open connections per source address.
#[derive(Debug, Default, Clone)]
pub(crate) struct SourceCounter {
    inner: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one connection slot for a source; releases it on drop.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    counter: SourceCounter,
    addr: IpAddr,
}

impl SourceCounter {
    /// Take a slot for `addr` unless it already has `limit` connections.
    pub(crate) fn try_acquire(&self, addr: IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(addr).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            counter: self.clone(),
            addr,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self
            .counter
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_released() {
        let c = SourceCounter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let s1 = c.try_acquire(a, 2).unwrap();
        let _s2 = c.try_acquire(a, 2).unwrap();
        assert!(c.try_acquire(a, 2).is_none());
        drop(s1);
        assert!(c.try_acquire(a, 2).is_some());
    }
}
