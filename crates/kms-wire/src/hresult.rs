//! HRESULTs a KMS host returns in the RESPONSE stub (PROTOCOL.md §9.6) and the client-side
//! codes operators meet.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Windows HRESULT as carried in the RequestActivation return value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hresult(pub u32);

impl Hresult {
    /// Success.
    pub const S_OK: Hresult = Hresult(0x0000_0000);
    /// HRESULT_FROM_WIN32(ERROR_INVALID_DATA): bad version, malformed message, bad MAC/padding,
    /// required count > 1000.
    pub const INVALID_DATA: Hresult = Hresult(0x8007_000D);
    /// SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH: the host does not activate this product group.
    pub const KMS_ID_MISMATCH: Hresult = Hresult(0xC004_F042);
    /// SL_E_VL_INVALID_TIMESTAMP: request time more than the allowed skew from host time.
    pub const INVALID_TIMESTAMP: Hresult = Hresult(0xC004_F06C);
    /// SL_REMAPPING_SP_STATUS_INVALIDARG.
    pub const SP_STATUS_INVALIDARG: Hresult = Hresult(0xC004_D104);
    /// SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED: the host is not activated (maintenance).
    pub const KMS_NOT_ACTIVATED: Hresult = Hresult(0xC004_F041);
    /// SL_E_VL_BINDING_SERVICE_NOT_ENABLED.
    pub const BINDING_SERVICE_NOT_ENABLED: Hresult = Hresult(0xC004_F039);
    /// Client side: the count reported by the KMS host is insufficient.
    pub const COUNT_INSUFFICIENT: Hresult = Hresult(0xC004_F038);
    /// Client side: no KMS host could be contacted.
    pub const NO_KMS_HOST: Hresult = Hresult(0xC004_F074);
    /// Client side: the product key is not valid for this product (wrong GVLK).
    pub const INVALID_PRODUCT_KEY: Hresult = Hresult(0xC004_F069);
    /// Client side: DNS name does not exist (no _vlmcs SRV record).
    pub const DNS_NAME_DOES_NOT_EXIST: Hresult = Hresult(0x8007_232B);

    /// True for success codes (severity bit clear).
    pub const fn is_success(self) -> bool {
        self.0 & 0x8000_0000 == 0
    }

    /// Symbolic name, if known.
    pub fn name(self) -> Option<&'static str> {
        describe(self).map(|d| d.0)
    }

    /// One-line explanation, if known.
    pub fn meaning(self) -> Option<&'static str> {
        describe(self).map(|d| d.1)
    }
}

fn describe(h: Hresult) -> Option<(&'static str, &'static str)> {
    Some(match h {
        Hresult::S_OK => ("S_OK", "success"),
        Hresult::INVALID_DATA => (
            "HRESULT_FROM_WIN32(ERROR_INVALID_DATA)",
            "the KMS host rejected the request as malformed (protocol version, length, MAC, padding or required count)",
        ),
        Hresult::KMS_ID_MISMATCH => (
            "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH",
            "the KMS host does not activate this product group (unknown, retail, preview, not served or seat limit reached)",
        ),
        Hresult::INVALID_TIMESTAMP => (
            "SL_E_VL_INVALID_TIMESTAMP",
            "the client's clock differs from the KMS host's by more than the allowed skew",
        ),
        Hresult::SP_STATUS_INVALIDARG => (
            "SL_REMAPPING_SP_STATUS_INVALIDARG",
            "invalid argument (client list overflow on some hosts)",
        ),
        Hresult::KMS_NOT_ACTIVATED => (
            "SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED",
            "the KMS host is not activated or is in maintenance",
        ),
        Hresult::BINDING_SERVICE_NOT_ENABLED => (
            "SL_E_VL_BINDING_SERVICE_NOT_ENABLED",
            "the KMS service is not enabled",
        ),
        Hresult::COUNT_INSUFFICIENT => (
            "SL_E_VL_NOT_ENOUGH_COUNT",
            "the count reported by the KMS host is below the client's threshold",
        ),
        Hresult::NO_KMS_HOST => (
            "KMS_HOST_UNREACHABLE (client-side)",
            "the client could not contact any KMS host (DNS, firewall, or every host down)",
        ),
        Hresult::INVALID_PRODUCT_KEY => (
            "SL_E_PRODUCT_SKU_NOT_INSTALLED",
            "the product SKU is not found; the wrong product key (GVLK) is installed",
        ),
        Hresult::DNS_NAME_DOES_NOT_EXIST => (
            "DNS_ERROR_RCODE_NAME_ERROR",
            "no _vlmcs._tcp SRV record was found in DNS",
        ),
        _ => return None,
    })
}

impl fmt::Display for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "0x{:08X} ({n})", self.0),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hresult(0x{:08X})", self.0)
    }
}
