//! [`DnsConfig`]: what an operator sets for the DNS listener, with documented defaults and a
//! [`DnsConfig::validate`] that turns nonsense into a typed [`DnsConfigError`] before anything
//! is bound.
//!
//! kmsd maps its flags onto these fields: `--dns-zone` (repeatable) → [`DnsConfig::zones`],
//! `--dns-ttl` → [`DnsConfig::ttl`], `--dns-axfr-allow` (repeatable) →
//! [`DnsConfig::axfr_allow`]. `--dns-listen` is the address kmsd binds before calling
//! [`crate::DnsServer::serve`]; `--dns-priority`/`--dns-weight` are per-node values that reach
//! this crate through the [`kms_core::ClusterView`].

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::rr::Name;
use ipnet::IpNet;

/// Largest UDP payload this server ever sends unless configured otherwise: the DNS Flag Day
/// 2020 value that avoids IP fragmentation on practically every path.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

/// Configuration of the authoritative DNS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Zones served, e.g. `kms.corp.example.` (like Microsoft's DnsDomainPublishList). At
    /// least one; not the root, no duplicates. Zones may nest (`corp.example.` for a
    /// conditional forwarder of `_vlmcs._tcp.corp.example.` beside a delegated
    /// `kms.corp.example.`): a name is answered from the most specific zone containing it.
    pub zones: Vec<Name>,
    /// TTL of every positive record. Short, so a failed node leaves caches quickly.
    /// Default 60 s.
    pub ttl: Duration,
    /// SOA fields (and the negative-caching TTL).
    pub soa: SoaConfig,
    /// Networks allowed to transfer the zones (AXFR/IXFR over TCP) — secondary servers.
    /// Empty (the default): zone transfers are refused to everyone.
    pub axfr_allow: Vec<IpNet>,
    /// Per-source response-rate limiting on UDP.
    pub rate_limit: RateLimitConfig,
    /// Concurrent TCP connections; one more is accepted and closed at once. Default 128.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no complete query within this time is closed; also bounds
    /// each write to a slow reader. Default 10 s.
    pub tcp_idle_timeout: Duration,
    /// Largest UDP response this server sends, whatever the client's EDNS buffer size
    /// (clamped to 512..=4096). Default [`DEFAULT_MAX_UDP_PAYLOAD`].
    pub max_udp_payload: u16,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            zones: Vec::new(),
            ttl: Duration::from_secs(60),
            soa: SoaConfig::default(),
            axfr_allow: Vec::new(),
            rate_limit: RateLimitConfig::default(),
            max_tcp_connections: 128,
            tcp_idle_timeout: Duration::from_secs(10),
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

/// SOA record fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoaConfig {
    /// Primary name server. Default: the NS target of the member with the lowest id (the same
    /// on every node), or the zone apex while there are no members.
    pub mname: Option<Name>,
    /// Responsible mailbox in DNS form (`hostmaster.example.com.`). Default `hostmaster.<zone>`.
    pub rname: Option<Name>,
    /// How often a secondary checks the serial. Default 60 s: this zone changes with health.
    pub refresh: Duration,
    /// Retry interval after a failed refresh. Default 30 s.
    pub retry: Duration,
    /// How long a secondary keeps serving without reaching a primary. Default 1 day.
    pub expire: Duration,
    /// Negative-caching TTL (RFC 2308): NXDOMAIN/NODATA answers are cached this long. When
    /// set, it must not exceed [`DnsConfig::ttl`]. Default (`None`): min(30 s, `ttl`), so
    /// lowering only the TTL is always valid.
    pub minimum: Option<Duration>,
}

impl Default for SoaConfig {
    fn default() -> Self {
        Self {
            mname: None,
            rname: None,
            refresh: Duration::from_secs(60),
            retry: Duration::from_secs(30),
            expire: Duration::from_secs(86_400),
            minimum: None,
        }
    }
}

/// Per-source response-rate limiting (RRL) for UDP, so the server cannot be used to amplify
/// a spoofed-source flood. Sources are IPv4 addresses and IPv6 /64 prefixes.
///
/// A source over its budget gets, for every `slip`-th limited query, a minimal `TC=1` reply
/// (no records, no larger than the query) so a real client behind a spoofed flood can retry
/// over TCP; the other limited queries are dropped. `slip = 0` drops all, `slip = 1` answers
/// every limited query with `TC=1`. This is BIND's RRL "slip". TCP is not rate-limited: its
/// handshake proves the source address; it is bounded by [`DnsConfig::max_tcp_connections`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained responses per second per source. 0 disables rate limiting. Default 50.
    pub responses_per_second: u32,
    /// Bucket size: responses a quiet source may get at once. Default 100.
    pub burst: u32,
    /// Every `slip`-th limited query is answered with `TC=1`; the rest are dropped. Default 2.
    pub slip: u32,
    /// Sources tracked at once. When the table is full (after forgetting idle sources), new
    /// sources are treated as over the limit. Default 100 000.
    pub max_sources: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            responses_per_second: 50,
            burst: 100,
            slip: 2,
            max_sources: 100_000,
        }
    }
}

/// Why a [`DnsConfig`] (or a flag value) was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    /// No zone configured.
    #[error("no DNS zone configured (set at least one dns-zone)")]
    NoZones,
    /// A zone name that does not parse.
    #[error("invalid DNS zone {name:?}: {reason}")]
    InvalidZone {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The root zone cannot be served.
    #[error("the root zone \".\" cannot be a dns-zone")]
    RootZone,
    /// The same zone twice.
    #[error("dns-zone {0} is listed twice")]
    DuplicateZone(String),
    /// TTL outside 1 s ..= 1 day.
    #[error("dns-ttl must be between 1 s and 86400 s, got {0:?}")]
    TtlOutOfRange(Duration),
    /// Negative TTL larger than the positive one.
    #[error("SOA minimum (negative TTL) {minimum:?} must not exceed dns-ttl {ttl:?}")]
    NegativeTtlAboveTtl {
        /// SOA minimum.
        minimum: Duration,
        /// Positive TTL.
        ttl: Duration,
    },
    /// An SOA timer that is zero or does not fit the field.
    #[error("SOA {field} must be between 1 s and 2147483647 s, got {value:?}")]
    SoaTimerOutOfRange {
        /// Which timer.
        field: &'static str,
        /// Its value.
        value: Duration,
    },
    /// SOA expire shorter than refresh + retry.
    #[error("SOA expire {expire:?} must be at least refresh + retry ({refresh:?} + {retry:?})")]
    SoaExpireTooShort {
        /// Expire.
        expire: Duration,
        /// Refresh.
        refresh: Duration,
        /// Retry.
        retry: Duration,
    },
    /// Rate limiting enabled with an empty bucket.
    #[error("dns rate-limit burst must be at least 1 when responses_per_second > 0")]
    ZeroBurst,
    /// Rate limiting enabled without room to track sources.
    #[error("dns rate-limit max_sources must be at least 1 when responses_per_second > 0")]
    ZeroMaxSources,
    /// No TCP connection allowed.
    #[error("dns max_tcp_connections must be at least 1")]
    ZeroTcpConnections,
    /// Idle timeout zero.
    #[error("dns tcp_idle_timeout must be greater than zero")]
    ZeroTcpIdleTimeout,
    /// UDP payload cap outside 512..=4096.
    #[error("dns max_udp_payload must be between 512 and 4096, got {0}")]
    UdpPayloadOutOfRange(u16),
    /// An `axfr-allow` value that is neither an IP address nor a CIDR network.
    #[error("invalid dns-axfr-allow {value:?}: expected an IP address or CIDR network")]
    InvalidNetwork {
        /// The value as given.
        value: String,
    },
}

impl DnsConfig {
    /// Check every field; `Ok` means [`crate::DnsServer::serve`] and [`crate::render`] accept
    /// this configuration.
    pub fn validate(&self) -> Result<(), DnsConfigError> {
        if self.zones.is_empty() {
            return Err(DnsConfigError::NoZones);
        }
        let zones: Vec<Name> = self.zones.iter().map(normalize).collect();
        for (i, zone) in zones.iter().enumerate() {
            if zone.is_root() {
                return Err(DnsConfigError::RootZone);
            }
            for other in &zones[..i] {
                if other == zone {
                    return Err(DnsConfigError::DuplicateZone(zone.to_string()));
                }
            }
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(86_400) {
            return Err(DnsConfigError::TtlOutOfRange(self.ttl));
        }
        let soa = &self.soa;
        for (field, value) in [
            ("refresh", soa.refresh),
            ("retry", soa.retry),
            ("expire", soa.expire),
            ("minimum", self.negative_ttl()),
        ] {
            if value < Duration::from_secs(1) || value.as_secs() > i32::MAX as u64 {
                return Err(DnsConfigError::SoaTimerOutOfRange { field, value });
            }
        }
        if let Some(minimum) = soa.minimum
            && minimum > self.ttl
        {
            return Err(DnsConfigError::NegativeTtlAboveTtl {
                minimum,
                ttl: self.ttl,
            });
        }
        if soa.expire < soa.refresh + soa.retry {
            return Err(DnsConfigError::SoaExpireTooShort {
                expire: soa.expire,
                refresh: soa.refresh,
                retry: soa.retry,
            });
        }
        let rl = &self.rate_limit;
        if rl.responses_per_second > 0 {
            if rl.burst == 0 {
                return Err(DnsConfigError::ZeroBurst);
            }
            if rl.max_sources == 0 {
                return Err(DnsConfigError::ZeroMaxSources);
            }
        }
        if self.max_tcp_connections == 0 {
            return Err(DnsConfigError::ZeroTcpConnections);
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(DnsConfigError::ZeroTcpIdleTimeout);
        }
        if !(512..=4096).contains(&self.max_udp_payload) {
            return Err(DnsConfigError::UdpPayloadOutOfRange(self.max_udp_payload));
        }
        Ok(())
    }

    /// The negative-caching TTL in force: [`SoaConfig::minimum`], or min(30 s, `ttl`).
    pub fn negative_ttl(&self) -> Duration {
        self.soa
            .minimum
            .unwrap_or_else(|| self.ttl.min(Duration::from_secs(30)))
    }

    /// TTL of positive records in seconds.
    pub(crate) fn ttl_secs(&self) -> u32 {
        secs_u32(self.ttl)
    }

    /// Whether `ip` may transfer the zones.
    pub fn axfr_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.axfr_allow.iter().any(|net| net.contains(&ip))
    }
}

/// Parse a `dns-zone` flag value (`kms.corp.example` or `kms.corp.example.`) into an absolute,
/// lower-case name.
pub fn parse_zone(value: &str) -> Result<Name, DnsConfigError> {
    let invalid = |reason: &str| DnsConfigError::InvalidZone {
        name: value.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    let name = Name::from_ascii(trimmed).map_err(|e| invalid(&e.to_string()))?;
    for label in name.iter() {
        if !is_ldh_label(label) && !label.starts_with(b"_") {
            return Err(invalid("labels may contain only letters, digits and '-'"));
        }
    }
    let name = normalize(&name);
    if name.is_root() {
        return Err(DnsConfigError::RootZone);
    }
    Ok(name)
}

/// Parse a `dns-axfr-allow` flag value: a CIDR network (`10.0.0.0/24`) or a bare address
/// (`10.0.0.5`, meaning that one host).
pub fn parse_network(value: &str) -> Result<IpNet, DnsConfigError> {
    let value = value.trim();
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    value
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| DnsConfigError::InvalidNetwork {
            value: value.to_string(),
        })
}

/// Absolute and lower-case.
pub(crate) fn normalize(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

/// Whole seconds, saturating at `u32::MAX`.
pub(crate) fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Letters, digits and inner hyphens, 1..=63 octets (RFC 952/1123 host label).
pub(crate) fn is_ldh_label(label: &[u8]) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && label.first() != Some(&b'-')
        && label.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DnsConfig {
        DnsConfig {
            zones: vec![parse_zone("kms.example.com").unwrap()],
            ..DnsConfig::default()
        }
    }

    #[test]
    fn defaults_with_a_zone_are_valid() {
        cfg().validate().unwrap();
        assert_eq!(cfg().ttl_secs(), 60);
    }

    #[test]
    fn table_of_invalid_configs() {
        let z = |s: &str| parse_zone(s).unwrap();
        let cases: Vec<(&str, DnsConfig, DnsConfigError)> = vec![
            ("no zones", DnsConfig::default(), DnsConfigError::NoZones),
            (
                "duplicate (case-insensitive)",
                DnsConfig {
                    zones: vec![
                        z("kms.example.com"),
                        Name::from_ascii("KMS.Example.COM.").unwrap(),
                    ],
                    ..cfg()
                },
                DnsConfigError::DuplicateZone("kms.example.com.".into()),
            ),
            (
                "root",
                DnsConfig {
                    zones: vec![Name::root()],
                    ..cfg()
                },
                DnsConfigError::RootZone,
            ),
            (
                "ttl zero",
                DnsConfig {
                    ttl: Duration::ZERO,
                    ..cfg()
                },
                DnsConfigError::TtlOutOfRange(Duration::ZERO),
            ),
            (
                "negative ttl above ttl",
                DnsConfig {
                    ttl: Duration::from_secs(20),
                    soa: SoaConfig {
                        minimum: Some(Duration::from_secs(30)),
                        ..SoaConfig::default()
                    },
                    ..cfg()
                },
                DnsConfigError::NegativeTtlAboveTtl {
                    minimum: Duration::from_secs(30),
                    ttl: Duration::from_secs(20),
                },
            ),
            (
                "expire too short",
                DnsConfig {
                    soa: SoaConfig {
                        expire: Duration::from_secs(60),
                        ..SoaConfig::default()
                    },
                    ..cfg()
                },
                DnsConfigError::SoaExpireTooShort {
                    expire: Duration::from_secs(60),
                    refresh: Duration::from_secs(60),
                    retry: Duration::from_secs(30),
                },
            ),
            (
                "zero retry",
                DnsConfig {
                    soa: SoaConfig {
                        retry: Duration::ZERO,
                        ..SoaConfig::default()
                    },
                    ..cfg()
                },
                DnsConfigError::SoaTimerOutOfRange {
                    field: "retry",
                    value: Duration::ZERO,
                },
            ),
            (
                "zero burst",
                DnsConfig {
                    rate_limit: RateLimitConfig {
                        burst: 0,
                        ..RateLimitConfig::default()
                    },
                    ..cfg()
                },
                DnsConfigError::ZeroBurst,
            ),
            (
                "zero tcp",
                DnsConfig {
                    max_tcp_connections: 0,
                    ..cfg()
                },
                DnsConfigError::ZeroTcpConnections,
            ),
            (
                "zero idle",
                DnsConfig {
                    tcp_idle_timeout: Duration::ZERO,
                    ..cfg()
                },
                DnsConfigError::ZeroTcpIdleTimeout,
            ),
            (
                "udp payload",
                DnsConfig {
                    max_udp_payload: 100,
                    ..cfg()
                },
                DnsConfigError::UdpPayloadOutOfRange(100),
            ),
        ];
        for (what, config, want) in cases {
            assert_eq!(config.validate(), Err(want), "{what}");
        }
    }

    #[test]
    fn default_negative_ttl_follows_a_short_ttl() {
        let c = DnsConfig {
            ttl: Duration::from_secs(10),
            ..cfg()
        };
        c.validate().unwrap();
        assert_eq!(c.negative_ttl(), Duration::from_secs(10));
        assert_eq!(cfg().negative_ttl(), Duration::from_secs(30));
    }

    #[test]
    fn rate_limit_disabled_needs_no_burst() {
        let c = DnsConfig {
            rate_limit: RateLimitConfig {
                responses_per_second: 0,
                burst: 0,
                slip: 0,
                max_sources: 0,
            },
            ..cfg()
        };
        c.validate().unwrap();
    }

    #[test]
    fn parse_zone_normalizes_and_rejects() {
        assert_eq!(
            parse_zone("KMS.Example.com").unwrap().to_string(),
            "kms.example.com."
        );
        assert_eq!(
            parse_zone("kms.example.com.").unwrap().to_string(),
            "kms.example.com."
        );
        assert!(parse_zone("").is_err());
        assert_eq!(parse_zone("."), Err(DnsConfigError::RootZone));
        assert!(parse_zone("bad zone.example").is_err());
        assert!(parse_zone("a..b").is_err());
    }

    #[test]
    fn parse_network_accepts_hosts_and_cidrs() {
        assert_eq!(
            parse_network("10.0.0.5").unwrap(),
            "10.0.0.5/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_network("10.0.0.7/24").unwrap(),
            "10.0.0.0/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_network("2001:db8::1").unwrap(),
            "2001:db8::1/128".parse::<IpNet>().unwrap()
        );
        assert!(parse_network("nope").is_err());
    }

    #[test]
    fn axfr_allow_matches_mapped_v4() {
        let c = DnsConfig {
            axfr_allow: vec![parse_network("127.0.0.1").unwrap()],
            ..cfg()
        };
        assert!(c.axfr_allowed("127.0.0.1".parse().unwrap()));
        assert!(c.axfr_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.axfr_allowed("127.0.0.2".parse().unwrap()));
    }
}
