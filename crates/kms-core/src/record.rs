//! The in-memory form of a [`ClientRecord`]: what [`crate::State`] keeps per client.
//!
//! A cluster holds every client machine it has seen within the retention (a million is a
//! supported size), so the per-client footprint decides the node's memory. The public
//! [`ClientRecord`] is convenient (owned strings, a `Vec` of request ids, full GUIDs) but
//! costs ≈ 330 bytes per client once its heap blocks are counted. [`Stored`] keeps the same
//! information in 96 bytes plus the workstation name:
//!
//! * product group and SKU as 16-bit indexes into the compiled catalog (a GUID the catalog
//!   does not hold is kept out of line);
//! * the source address as an IPv4 address and port (any other text is kept out of line);
//! * the newest request id inline and the older ones (up to [`RECENT_REQUEST_IDS`] − 1) in one
//!   fixed-size block, allocated only once a client has recorded a second request;
//! * the rarely set fields — previous CMID, the other workstation name of a duplicate CMID,
//!   out-of-catalog GUIDs, a non-IPv4 source — in one optional block ([`Extra`]);
//! * `request_count` as 32 bits, saturating (it counts recorded requests of one machine).
//!
//! Conversions both ways are lossless for every record the state machine can hold, except
//! that a `request_count` above `u32::MAX` reads back as `u32::MAX`. Serialization writes
//! exactly the fields of [`ClientRecord`] in its order, so snapshots are byte-identical to
//! those of the `ClientRecord`-based state (format unchanged).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use kms_wire::{FileTime, Guid};
use serde::{Deserialize, Serialize};

use crate::state::{ClientRecord, RECENT_REQUEST_IDS, RequestId};
use crate::{ClientMachineId, KmsCountedId, SkuId, catalog};

/// Catalog code of the all-zero GUID.
const CODE_NIL: u16 = u16::MAX - 1;
/// Catalog code of a GUID the catalog does not hold (kept in [`Extra`]).
const CODE_OTHER: u16 = u16::MAX;

/// Source kinds.
const SOURCE_EMPTY: u8 = 0;
const SOURCE_V4: u8 = 1;
const SOURCE_TEXT: u8 = 2;

type OlderIds = [RequestId; RECENT_REQUEST_IDS - 1];

/// One client's record, compactly (see the module doc). Invariants, so that equal records
/// compare equal: unused request id slots are zero, `older_ids` is `None` while fewer than
/// two ids are held, `extra` is `None` when all its fields are, and the IPv4 source fields
/// are zero unless the source kind is IPv4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    first_seen: FileTime,
    last_seen: FileTime,
    last_node: u64,
    /// The newest request id (0 when none is held).
    newest_id: RequestId,
    workstation: Box<str>,
    /// The older request ids, oldest first; `ids_len - 1` of them are used.
    older_ids: Option<Box<OlderIds>>,
    extra: Option<Box<Extra>>,
    license_status: u32,
    required_count: u32,
    request_count: u32,
    kms_code: u16,
    sku_code: u16,
    protocol_version: u16,
    source_port: u16,
    source_ip: [u8; 4],
    source_kind: u8,
    ids_len: u8,
    is_vm: bool,
    duplicate: bool,
}

/// The rarely used fields of a [`Stored`] record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extra {
    /// The product group when the catalog does not hold it.
    kms_counted_id: Option<KmsCountedId>,
    /// The SKU when the catalog does not hold it.
    sku_id: Option<SkuId>,
    /// The previous CMID when it is not all zero.
    previous_client_machine_id: Option<ClientMachineId>,
    /// The other workstation name of a duplicate CMID.
    duplicate_workstation: Option<Box<str>>,
    /// The source when it is not empty and not an IPv4 socket address in canonical form.
    source: Option<Box<str>>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        *self == Extra::default()
    }
}

/// GUID → index of the catalog's product groups and SKUs, built on first use.
fn codes() -> &'static (HashMap<Guid, u16>, HashMap<Guid, u16>) {
    static CODES: OnceLock<(HashMap<Guid, u16>, HashMap<Guid, u16>)> = OnceLock::new();
    CODES.get_or_init(|| {
        let index = |ids: &mut dyn Iterator<Item = Guid>| {
            let mut m = HashMap::new();
            for (i, id) in ids.enumerate() {
                if let Ok(code) = u16::try_from(i)
                    && code < CODE_NIL
                {
                    m.entry(id).or_insert(code);
                }
            }
            m
        };
        (
            index(&mut catalog::products().iter().map(|p| p.kms_counted_id)),
            index(&mut catalog::skus().iter().map(|s| s.sku_id)),
        )
    })
}

fn encode_guid(id: Guid, table: &HashMap<Guid, u16>) -> u16 {
    if id == Guid::NIL {
        CODE_NIL
    } else {
        table.get(&id).copied().unwrap_or(CODE_OTHER)
    }
}

impl Stored {
    /// The compact form of `r`. Keeps the last [`RECENT_REQUEST_IDS`] request ids.
    pub(crate) fn from_record(r: ClientRecord) -> Stored {
        let mut s = Stored {
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            last_node: r.last_node,
            newest_id: 0,
            workstation: r.workstation.into_boxed_str(),
            older_ids: None,
            extra: None,
            license_status: r.license_status,
            required_count: r.required_count,
            request_count: u32::try_from(r.request_count).unwrap_or(u32::MAX),
            kms_code: CODE_NIL,
            sku_code: CODE_NIL,
            protocol_version: r.protocol_version,
            source_port: 0,
            source_ip: [0; 4],
            source_kind: SOURCE_EMPTY,
            ids_len: 0,
            is_vm: r.is_vm,
            duplicate: r.duplicate,
        };
        s.set_kms_counted_id(r.kms_counted_id);
        s.set_sku_id(r.sku_id);
        s.set_previous_client_machine_id(r.previous_client_machine_id);
        s.set_source(&r.last_source);
        s.set_duplicate_workstation(r.duplicate_workstation.map(String::into_boxed_str));
        s.set_request_ids(&r.recent_request_ids);
        s
    }

    /// The public form.
    pub(crate) fn to_record(&self) -> ClientRecord {
        ClientRecord {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            kms_counted_id: self.kms_counted_id(),
            sku_id: self.sku_id(),
            previous_client_machine_id: self.previous_client_machine_id(),
            workstation: self.workstation.to_string(),
            license_status: self.license_status,
            is_vm: self.is_vm,
            required_count: self.required_count,
            protocol_version: self.protocol_version,
            last_node: self.last_node,
            last_source: self.source(),
            request_count: u64::from(self.request_count),
            duplicate: self.duplicate,
            duplicate_workstation: self.duplicate_workstation().map(str::to_string),
            recent_request_ids: self.request_ids().to_vec(),
        }
    }

    pub(crate) fn first_seen(&self) -> FileTime {
        self.first_seen
    }

    pub(crate) fn last_seen(&self) -> FileTime {
        self.last_seen
    }

    pub(crate) fn workstation(&self) -> &str {
        &self.workstation
    }

    pub(crate) fn required_count(&self) -> u32 {
        self.required_count
    }

    pub(crate) fn duplicate(&self) -> bool {
        self.duplicate
    }

    /// The GUID behind a catalog code: the catalog's row, all zero, or the extra block's.
    fn decode_guid(
        &self,
        code: u16,
        in_catalog: impl Fn(usize) -> Guid,
        other: fn(&Extra) -> Option<Guid>,
    ) -> Guid {
        match code {
            CODE_NIL => Guid::NIL,
            CODE_OTHER => self.extra.as_deref().and_then(other).unwrap_or(Guid::NIL),
            code => in_catalog(usize::from(code)),
        }
    }

    pub(crate) fn kms_counted_id(&self) -> KmsCountedId {
        self.decode_guid(
            self.kms_code,
            |i| catalog::products()[i].kms_counted_id,
            |e| e.kms_counted_id,
        )
    }

    pub(crate) fn sku_id(&self) -> SkuId {
        self.decode_guid(self.sku_code, |i| catalog::skus()[i].sku_id, |e| e.sku_id)
    }

    fn previous_client_machine_id(&self) -> ClientMachineId {
        self.extra
            .as_ref()
            .and_then(|e| e.previous_client_machine_id)
            .unwrap_or(Guid::NIL)
    }

    fn duplicate_workstation(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.duplicate_workstation.as_deref())
    }

    /// The source address as recorded (text).
    fn source(&self) -> String {
        match self.source_kind {
            SOURCE_V4 => {
                SocketAddrV4::new(Ipv4Addr::from(self.source_ip), self.source_port).to_string()
            }
            SOURCE_TEXT => self
                .extra
                .as_ref()
                .and_then(|e| e.source.as_deref())
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        }
    }

    /// The held request ids, oldest first, in a stack buffer.
    fn request_ids(&self) -> RequestIds {
        let mut ids = RequestIds {
            ids: [0; RECENT_REQUEST_IDS],
            len: usize::from(self.ids_len),
        };
        if ids.len > 0 {
            let older = ids.len - 1;
            if let Some(o) = &self.older_ids {
                ids.ids[..older].copy_from_slice(&o[..older]);
            }
            ids.ids[older] = self.newest_id;
        }
        ids
    }

    pub(crate) fn holds_request_id(&self, id: RequestId) -> bool {
        self.request_ids().contains(&id)
    }

    /// Hold the last [`RECENT_REQUEST_IDS`] of `ids` (oldest first).
    fn set_request_ids(&mut self, ids: &[RequestId]) {
        let ids = &ids[ids.len().saturating_sub(RECENT_REQUEST_IDS)..];
        self.ids_len = u8::try_from(ids.len()).unwrap_or(0);
        match ids.split_last() {
            None => {
                self.newest_id = 0;
                self.older_ids = None;
            }
            Some((newest, older)) => {
                self.newest_id = *newest;
                if older.is_empty() {
                    self.older_ids = None;
                } else {
                    let block = self.older_ids.get_or_insert_with(Box::default);
                    block.fill(0);
                    block[..older.len()].copy_from_slice(older);
                }
            }
        }
    }

    /// Append `id` as the newest request id, dropping the oldest beyond
    /// [`RECENT_REQUEST_IDS`].
    pub(crate) fn push_request_id(&mut self, id: RequestId) {
        let mut ids = self.request_ids();
        if ids.len == RECENT_REQUEST_IDS {
            ids.ids.copy_within(1.., 0);
            ids.len -= 1;
        }
        ids.ids[ids.len] = id;
        ids.len += 1;
        self.set_request_ids(&ids);
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drop the extra block if nothing is left in it.
    fn tidy_extra(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.is_empty()) {
            self.extra = None;
        }
    }

    /// Set one field of the extra block: allocating the block for `Some`, dropping it when
    /// `None` leaves it empty.
    fn set_extra<T>(&mut self, field: fn(&mut Extra) -> &mut Option<T>, value: Option<T>) {
        match value {
            Some(v) => *field(self.extra_mut()) = Some(v),
            None => {
                if let Some(e) = &mut self.extra {
                    *field(e) = None;
                    self.tidy_extra();
                }
            }
        }
    }

    pub(crate) fn set_kms_counted_id(&mut self, id: KmsCountedId) {
        self.kms_code = encode_guid(id, &codes().0);
        let other = (self.kms_code == CODE_OTHER).then_some(id);
        self.set_extra(|e| &mut e.kms_counted_id, other);
    }

    pub(crate) fn set_sku_id(&mut self, id: SkuId) {
        self.sku_code = encode_guid(id, &codes().1);
        let other = (self.sku_code == CODE_OTHER).then_some(id);
        self.set_extra(|e| &mut e.sku_id, other);
    }

    pub(crate) fn set_previous_client_machine_id(&mut self, id: ClientMachineId) {
        self.set_extra(
            |e| &mut e.previous_client_machine_id,
            (id != Guid::NIL).then_some(id),
        );
    }

    pub(crate) fn set_duplicate_workstation(&mut self, name: Option<Box<str>>) {
        self.set_extra(|e| &mut e.duplicate_workstation, name);
    }

    /// Record the source address text: inline when it is an IPv4 socket address written the
    /// way it would be printed, else out of line.
    pub(crate) fn set_source(&mut self, text: &str) {
        self.source_ip = [0; 4];
        self.source_port = 0;
        let v4 = match text.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(a)) if a.to_string() == text => Some(a),
            _ => None,
        };
        let out_of_line = match v4 {
            Some(a) => {
                self.source_kind = SOURCE_V4;
                self.source_ip = a.ip().octets();
                self.source_port = a.port();
                None
            }
            None if text.is_empty() => {
                self.source_kind = SOURCE_EMPTY;
                None
            }
            None => {
                self.source_kind = SOURCE_TEXT;
                Some(Box::from(text))
            }
        };
        self.set_extra(|e| &mut e.source, out_of_line);
    }

    pub(crate) fn set_seen(&mut self, first_seen: FileTime, last_seen: FileTime) {
        self.first_seen = first_seen;
        self.last_seen = last_seen;
    }

    pub(crate) fn set_workstation(&mut self, name: Box<str>) {
        self.workstation = name;
    }

    /// Take the scalar descriptive fields of a newer request.
    pub(crate) fn set_description(
        &mut self,
        license_status: u32,
        is_vm: bool,
        required_count: u32,
        protocol_version: u16,
        last_node: u64,
    ) {
        self.license_status = license_status;
        self.is_vm = is_vm;
        self.required_count = required_count;
        self.protocol_version = protocol_version;
        self.last_node = last_node;
    }

    pub(crate) fn flag_duplicate(&mut self, other_workstation: Box<str>) {
        self.duplicate = true;
        self.set_duplicate_workstation(Some(other_workstation));
    }

    pub(crate) fn count_request(&mut self) {
        self.request_count = self.request_count.saturating_add(1);
    }
}

/// Up to [`RECENT_REQUEST_IDS`] request ids on the stack.
struct RequestIds {
    ids: [RequestId; RECENT_REQUEST_IDS],
    len: usize,
}

impl std::ops::Deref for RequestIds {
    type Target = [RequestId];
    fn deref(&self) -> &[RequestId] {
        &self.ids[..self.len]
    }
}

/// [`ClientRecord`]'s serialized form, borrowed from a [`Stored`] record: the same fields in
/// the same order, so the encoding is the one `ClientRecord` has.
#[derive(Serialize)]
#[serde(rename = "ClientRecord")]
struct RecordRef<'a> {
    first_seen: FileTime,
    last_seen: FileTime,
    kms_counted_id: KmsCountedId,
    sku_id: SkuId,
    previous_client_machine_id: ClientMachineId,
    workstation: &'a str,
    license_status: u32,
    is_vm: bool,
    required_count: u32,
    protocol_version: u16,
    last_node: u64,
    last_source: &'a str,
    request_count: u64,
    duplicate: bool,
    duplicate_workstation: Option<&'a str>,
    recent_request_ids: &'a [RequestId],
}

impl Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let source = self.source();
        let ids = self.request_ids();
        RecordRef {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            kms_counted_id: self.kms_counted_id(),
            sku_id: self.sku_id(),
            previous_client_machine_id: self.previous_client_machine_id(),
            workstation: &self.workstation,
            license_status: self.license_status,
            is_vm: self.is_vm,
            required_count: self.required_count,
            protocol_version: self.protocol_version,
            last_node: self.last_node,
            last_source: &source,
            request_count: u64::from(self.request_count),
            duplicate: self.duplicate,
            duplicate_workstation: self.duplicate_workstation(),
            recent_request_ids: &ids,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Stored, D::Error> {
        ClientRecord::deserialize(d).map(Stored::from_record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClientRecord {
        let product = &catalog::products()[3];
        let sku = &catalog::skus()[7];
        ClientRecord {
            first_seen: FileTime(1),
            last_seen: FileTime(2),
            kms_counted_id: product.kms_counted_id,
            sku_id: sku.sku_id,
            previous_client_machine_id: Guid::NIL,
            workstation: "WS-1.corp.example".into(),
            license_status: 2,
            is_vm: true,
            required_count: 25,
            protocol_version: 6,
            last_node: 3,
            last_source: "10.1.2.3:49731".into(),
            request_count: 4,
            duplicate: false,
            duplicate_workstation: None,
            recent_request_ids: vec![9],
        }
    }

    #[test]
    fn the_inline_record_stays_small() {
        assert!(
            std::mem::size_of::<Stored>() <= 96,
            "{}",
            std::mem::size_of::<Stored>()
        );
    }

    #[test]
    fn common_records_need_no_extra_block() {
        let s = Stored::from_record(sample());
        assert!(s.extra.is_none());
        assert!(s.older_ids.is_none());
        assert_eq!(s.to_record(), sample());
    }

    #[test]
    fn every_field_round_trips_including_the_out_of_line_ones() {
        let variants: Vec<fn(&mut ClientRecord)> = vec![
            |r| r.kms_counted_id = Guid([7; 16]),
            |r| r.sku_id = Guid([8; 16]),
            |r| r.kms_counted_id = Guid::NIL,
            |r| r.previous_client_machine_id = Guid([9; 16]),
            |r| r.last_source = "[2001:db8::1]:1688".into(),
            |r| r.last_source = "[::ffff:10.0.0.1]:5".into(),
            |r| r.last_source = "010.1.2.3:49731".into(),
            |r| r.last_source = "not an address".into(),
            |r| r.last_source = String::new(),
            |r| {
                r.duplicate = true;
                r.duplicate_workstation = Some("CLONE".into());
            },
            |r| r.recent_request_ids = vec![],
            |r| r.recent_request_ids = (1..=8).collect(),
            |r| r.request_count = u64::from(u32::MAX),
        ];
        for change in variants {
            let mut r = sample();
            change(&mut r);
            let s = Stored::from_record(r.clone());
            assert_eq!(s.to_record(), r);
            // The encoding is ClientRecord's.
            assert_eq!(
                bincode::serialize(&s).unwrap(),
                bincode::serialize(&r).unwrap()
            );
            let back: Stored = bincode::deserialize(&bincode::serialize(&r).unwrap()).unwrap();
            assert_eq!(back, s);
            // Setting every out-of-line field back to its common value drops the block.
            let mut t = s.clone();
            t.set_kms_counted_id(sample().kms_counted_id);
            t.set_sku_id(sample().sku_id);
            t.set_previous_client_machine_id(Guid::NIL);
            t.set_source("10.1.2.3:49731");
            t.set_duplicate_workstation(None);
            assert!(t.extra.is_none());
        }
    }

    #[test]
    fn request_ids_keep_the_newest_eight() {
        let mut s = Stored::from_record(ClientRecord {
            recent_request_ids: vec![],
            ..sample()
        });
        for id in 1..=20u64 {
            s.push_request_id(id);
            let want: Vec<u64> = (id.saturating_sub(7).max(1)..=id).collect();
            assert_eq!(&*s.request_ids(), &want[..]);
            assert!(s.holds_request_id(id));
            assert!(!s.holds_request_id(id + 1));
        }
        // Shrinking back to one id frees the block and compares equal to a fresh record.
        s.set_request_ids(&[5]);
        assert!(s.older_ids.is_none());
        assert_eq!(
            s,
            Stored::from_record(ClientRecord {
                recent_request_ids: vec![5],
                request_count: u64::from(s.request_count),
                ..sample()
            })
        );
    }

    fn any_guid() -> impl proptest::strategy::Strategy<Value = Guid> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Guid::NIL),
            (0..catalog::products().len()).prop_map(|i| catalog::products()[i].kms_counted_id),
            (0..catalog::skus().len()).prop_map(|i| catalog::skus()[i].sku_id),
            any::<[u8; 16]>().prop_map(Guid),
        ]
    }

    fn any_source() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(String::new()),
            any::<(u32, u16)>()
                .prop_map(|(ip, port)| { SocketAddrV4::new(Ipv4Addr::from(ip), port).to_string() }),
            any::<([u8; 16], u16)>().prop_map(|(ip, port)| {
                SocketAddr::from((std::net::Ipv6Addr::from(ip), port)).to_string()
            }),
            "[ -~]{0,64}",
        ]
    }

    proptest::proptest! {
        /// Every record the state machine can hold (text bounded, at most eight request
        /// ids, a request count within 32 bits) comes back exactly, and serializes exactly
        /// as the `ClientRecord` it came from.
        #[test]
        fn any_record_round_trips(
            times in proptest::prelude::any::<(u64, u64)>(),
            kms in any_guid(),
            sku in any_guid(),
            previous in any_guid(),
            workstation in "\\PC{0,64}",
            numbers in proptest::prelude::any::<(u32, bool, u32, u16, u64, u32, bool)>(),
            source in any_source(),
            other_name in proptest::option::of("\\PC{0,64}"),
            ids in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..=8),
        ) {
            let (license_status, is_vm, required_count, protocol_version, last_node, count, duplicate) = numbers;
            let r = ClientRecord {
                first_seen: FileTime(times.0.min(times.1)),
                last_seen: FileTime(times.0.max(times.1)),
                kms_counted_id: kms,
                sku_id: sku,
                previous_client_machine_id: previous,
                workstation,
                license_status,
                is_vm,
                required_count,
                protocol_version,
                last_node,
                last_source: source,
                request_count: u64::from(count),
                duplicate,
                duplicate_workstation: other_name,
                recent_request_ids: ids,
            };
            let s = Stored::from_record(r.clone());
            proptest::prop_assert_eq!(s.to_record(), r.clone());
            proptest::prop_assert_eq!(
                bincode::serialize(&s).unwrap(),
                bincode::serialize(&r).unwrap()
            );
        }
    }

    #[test]
    fn counts_above_32_bits_saturate() {
        let s = Stored::from_record(ClientRecord {
            request_count: u64::MAX,
            ..sample()
        });
        assert_eq!(s.to_record().request_count, u64::from(u32::MAX));
    }
}
