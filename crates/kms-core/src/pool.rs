//! Client-count pools (DESIGN §4, PROTOCOL §9.2).
//!
//! A genuine KMS host keeps one count per *application id*: Windows (client and server editions
//! share it), Office 2010 and Office 2013+. A request with any other application id belongs to
//! no pool and cannot be activated.

use kms_wire::Guid;
use serde::{Deserialize, Serialize};

use crate::ApplicationId;
use crate::catalog::Application;

/// One client-count pool, keyed by the request's application id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Pool {
    /// Windows client and Windows Server editions (application id `55c92734-…`).
    Windows,
    /// Office 2010 (application id `59a52881-…`).
    Office2010,
    /// Office 2013, 2016, 2019, LTSC 2021 and LTSC 2024 (application id `0ff1ce15-…`).
    Office2013Plus,
}

impl Pool {
    /// All pools, in a fixed order.
    pub const ALL: [Pool; 3] = [Pool::Windows, Pool::Office2010, Pool::Office2013Plus];

    /// The pool of an application id; `None` for an application id no KMS host counts.
    pub fn from_application_id(id: ApplicationId) -> Option<Pool> {
        Application::from_application_id(id).map(Pool::from)
    }

    /// The application id whose requests this pool counts.
    pub const fn application_id(self) -> Guid {
        self.application().application_id()
    }

    /// The catalog application of this pool.
    pub const fn application(self) -> Application {
        match self {
            Pool::Windows => Application::Windows,
            Pool::Office2010 => Application::Office2010,
            Pool::Office2013Plus => Application::Office2013Plus,
        }
    }

    /// A short stable name (`windows`, `office2010`, `office2013plus`) for metrics and CLIs.
    pub const fn name(self) -> &'static str {
        match self {
            Pool::Windows => "windows",
            Pool::Office2010 => "office2010",
            Pool::Office2013Plus => "office2013plus",
        }
    }

    /// Parse [`Pool::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Pool> {
        Pool::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl From<Application> for Pool {
    fn from(a: Application) -> Pool {
        match a {
            Application::Windows => Pool::Windows,
            Application::Office2010 => Pool::Office2010,
            Application::Office2013Plus => Pool::Office2013Plus,
        }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One value per [`Pool`]. A struct rather than a map so that it serializes the same way in
/// every format (JSON object with fixed keys, bincode fields in order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerPool<T> {
    /// Value for [`Pool::Windows`].
    pub windows: T,
    /// Value for [`Pool::Office2010`].
    pub office2010: T,
    /// Value for [`Pool::Office2013Plus`].
    pub office2013_plus: T,
}

impl<T> PerPool<T> {
    /// The value for `pool`.
    pub fn get(&self, pool: Pool) -> &T {
        match pool {
            Pool::Windows => &self.windows,
            Pool::Office2010 => &self.office2010,
            Pool::Office2013Plus => &self.office2013_plus,
        }
    }

    /// The value for `pool`, mutably.
    pub fn get_mut(&mut self, pool: Pool) -> &mut T {
        match pool {
            Pool::Windows => &mut self.windows,
            Pool::Office2010 => &mut self.office2010,
            Pool::Office2013Plus => &mut self.office2013_plus,
        }
    }

    /// `(pool, value)` for every pool, in [`Pool::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Pool, &T)> {
        Pool::ALL.into_iter().map(move |p| (p, self.get(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_ids_map_to_pools() {
        for p in Pool::ALL {
            assert_eq!(Pool::from_application_id(p.application_id()), Some(p));
            assert_eq!(Pool::from_name(p.name()), Some(p));
        }
        assert_eq!(Pool::from_application_id(Guid::NIL), None);
        let w: Guid = "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap();
        assert_eq!(Pool::from_application_id(w), Some(Pool::Windows));
    }
}
