//! Listener settings (per node; not replicated).

use std::time::Duration;

use ipnet::IpNet;

/// Operational limits and protocol switches of the KMS listener.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// This node's id; its low 8 bits go into the high byte of association group ids so that
    /// ids handed out by different nodes of a cluster never collide.
    pub node_id: u64,
    /// Accept NDR64 (Windows Server 2012+ hosts do). Default true.
    pub ndr64: bool,
    /// Acknowledge Bind Time Feature Negotiation. Default true.
    pub btfn: bool,
    /// Close a connection that sends nothing for this long, and drop a PDU that takes longer
    /// than this to arrive completely (slow-loris guard). Default 30 s.
    pub idle_timeout: Duration,
    /// Maximum open connections across all listeners; more are accepted and closed at once.
    pub max_connections: usize,
    /// Maximum simultaneous connections from one source IP address.
    pub max_connections_per_source: usize,
    /// Largest PDU accepted (frag_length); larger ones close the connection. Default 4096.
    pub max_pdu_size: usize,
    /// When non-empty, only clients inside one of these networks are served.
    pub allow_clients: Vec<IpNet>,
    /// How long a shutdown waits for in-flight calls before closing their connections.
    pub drain_timeout: Duration,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            node_id: 1,
            ndr64: true,
            btfn: true,
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_source: 256,
            max_pdu_size: 4096,
            allow_clients: Vec::new(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
