//! Process exit codes scripts can rely on.
//!
//! Each result of a run falls into one class; the process exits with the highest code of all
//! its results, so one connection failure among successes still shows as 3 and a single
//! forged response as at least 2.

use std::fmt;

use serde::Serialize;

/// The outcome class of one request or of a whole run, with its process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitClass {
    /// 0: every request was activated (a verified success response).
    #[default]
    Success,
    /// 1: the KMS host refused at least one request with an HRESULT (§9.6).
    Refused,
    /// 2: a response failed verification (§6.7) or broke the RPC protocol (§3, §4).
    Invalid,
    /// 3: the host could not be reached, the connection broke, or a reply timed out.
    Connection,
    /// 4: the kmsd admin API refused the caller's certificate (PERMISSION_DENIED or
    /// UNAUTHENTICATED).
    PermissionDenied,
    /// 64: the command line was wrong (EX_USAGE); nothing was sent.
    Usage,
}

impl ExitClass {
    /// The process exit code.
    pub const fn code(self) -> u8 {
        match self {
            ExitClass::Success => 0,
            ExitClass::Refused => 1,
            ExitClass::Invalid => 2,
            ExitClass::Connection => 3,
            ExitClass::PermissionDenied => 4,
            ExitClass::Usage => 64,
        }
    }

    /// The class of a whole run: the worst of its parts (`Success` when empty).
    pub fn worst(classes: impl IntoIterator<Item = ExitClass>) -> ExitClass {
        classes.into_iter().max().unwrap_or(ExitClass::Success)
    }
}

impl fmt::Display for ExitClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitClass::Success => "success",
            ExitClass::Refused => "refused",
            ExitClass::Invalid => "invalid",
            ExitClass::Connection => "connection",
            ExitClass::PermissionDenied => "permission_denied",
            ExitClass::Usage => "usage",
        })
    }
}

/// The `EXIT CODES` paragraph shown in `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   every request was activated (verified success response)
  1   the KMS host refused a request with an HRESULT (e.g. 0xC004F042)
  2   a response failed verification or broke the RPC protocol
  3   connection failure: host unreachable, connection closed, or timeout
  64  usage error (bad flag, unknown product); nothing was sent
  With several results the highest code wins.";
