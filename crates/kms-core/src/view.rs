//! [`ClusterView`]: what the rest of the system needs to know about the cluster's members and
//! their health — plain data, produced by the cluster layer, consumed by DNS, status pages and
//! the admin API. Knows nothing of Raft.

use serde::{Deserialize, Serialize};

/// One member as seen from the node that built the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Node name (DNS label): SRV target `<name>.<zone>`.
    pub name: String,
    /// Advertised host: an IP literal (published as A/AAAA) or a DNS name.
    pub host: String,
    /// Advertised KMS port (SRV port).
    pub kms_port: u16,
    /// Advertised gRPC address.
    pub grpc_addr: String,
    /// SRV priority.
    pub dns_priority: u16,
    /// SRV weight.
    pub dns_weight: u16,
    /// Voter (false: learner).
    pub voter: bool,
    /// Answered its recent health probes (always true for the local node).
    pub healthy: bool,
}

/// The cluster as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that built this view.
    pub local_id: u64,
    /// Known leader.
    pub leader_id: Option<u64>,
    /// Raft term.
    pub term: u64,
    /// Members, ordered by id.
    pub members: Vec<MemberView>,
    /// Rises whenever anything DNS publishes changes (members, addresses, health).
    pub generation: u64,
}

impl ClusterView {
    /// The members that answer probes.
    pub fn healthy(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| m.healthy)
    }
}
