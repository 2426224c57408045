//! The protocol matrix against a live node: KMS v4/v5/v6 × NDR32/NDR64 × BTFN offered or not ×
//! one or several requests per connection, each response verified by the client (PROTOCOL.md
//! §3.3, §4, §6.7); and nodes with NDR64 or BTFN switched off.

use kms_wire::kms::ProtocolVersion;
use kms_wire::rpc::Syntax;
use kmsctl::client::{ConnectionOptions, KmsConnection};

use crate::harness::Kmsd;
use crate::kms::*;

/// How the client binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// NDR32 only (Windows 7 and earlier).
    Ndr32,
    /// NDR32 + NDR64, ALTER_CONTEXT for NDR32: first request NDR32, later ones NDR64 (Windows).
    Windows,
    /// NDR32 + NDR64 and no ALTER_CONTEXT: every request NDR64.
    Ndr64,
}

fn opts(offer: Offer, btfn: bool) -> ConnectionOptions {
    let mut o = options(offer != Offer::Ndr32, btfn);
    o.rpc.alter_for_ndr32 = offer == Offer::Windows;
    o
}

/// The syntax request `i` (0-based) uses against a node with NDR64 `enabled`.
fn expected_syntax(offer: Offer, ndr64_enabled: bool, i: usize) -> Syntax {
    match offer {
        _ if !ndr64_enabled => Syntax::Ndr32,
        Offer::Ndr32 => Syntax::Ndr32,
        Offer::Windows if i == 0 => Syntax::Ndr32,
        Offer::Windows | Offer::Ndr64 => Syntax::Ndr64,
    }
}

/// Run the matrix against `node`; returns the number of machines activated.
async fn matrix(node: &Kmsd, ndr64_enabled: bool, btfn_enabled: bool, offers: &[Offer]) -> u32 {
    let addr = node.kms_addr();
    let win = windows_client();
    let mut count = 0u32;
    let mut epid: Option<String> = None;
    let mut hwid: Option<[u8; 8]> = None;
    for v in ProtocolVersion::ALL {
        for &offer in offers {
            for btfn in [true, false] {
                for n in [1usize, 3] {
                    let ctx = format!(
                        "node(ndr64={ndr64_enabled}, btfn={btfn_enabled}) v{} {offer:?} btfn={btfn} x{n}",
                        v.major()
                    );
                    let mut conn = KmsConnection::connect(addr, opts(offer, btfn))
                        .await
                        .unwrap_or_else(|e| panic!("{ctx}: bind: {e}"));
                    let a = conn.association();
                    let want_ack = (btfn && btfn_enabled).then_some(3);
                    assert_eq!(a.btfn_ack(), want_ack, "{ctx}: BTFN acknowledgement");
                    let ndr64_granted = offer != Offer::Ndr32 && ndr64_enabled;
                    assert_eq!(a.ndr64_context().is_some(), ndr64_granted, "{ctx}: NDR64");
                    for i in 0..n {
                        let who = machine(&win);
                        let req = request(&win, &who, v);
                        let (syntax, reply) = call(&mut conn, &req).await;
                        assert_eq!(
                            syntax,
                            expected_syntax(offer, ndr64_enabled, i),
                            "{ctx}: request {i}"
                        );
                        let r = granted(reply, &format!("{ctx}: request {i}"));
                        count += 1;
                        assert_eq!(r.response.version, v, "{ctx}");
                        assert_eq!(r.response.client_machine_id, who.cmid, "{ctx}");
                        assert_eq!(r.response.current_count, count.min(50), "{ctx}");
                        assert_eq!(r.response.response_time, req.request_time, "{ctx}");
                        assert_eq!(r.response.activation_interval, 120, "{ctx}");
                        assert_eq!(r.response.renewal_interval, 10080, "{ctx}");
                        match &epid {
                            None => epid = Some(r.response.epid.clone()),
                            Some(e) => assert_eq!(&r.response.epid, e, "{ctx}: one ePID"),
                        }
                        if v == ProtocolVersion::V6 {
                            let h = r.hwid.unwrap_or_else(|| panic!("{ctx}: no HwId"));
                            assert_eq!(*hwid.get_or_insert(h), h, "{ctx}: one HwId");
                        } else {
                            assert_eq!(r.hwid, None, "{ctx}");
                        }
                        // v5/v6 hosts prove they decrypted the request (§6.5).
                        assert_eq!(r.random.is_some(), v != ProtocolVersion::V4, "{ctx}");
                    }
                    // One more machine on the same connection in another version (a client may switch).
                    let renew_v = ProtocolVersion::ALL[(v.major() as usize + 1) % 3];
                    let (_, reply) = call(&mut conn, &request(&win, &machine(&win), renew_v)).await;
                    let r = granted(reply, &format!("{ctx}: follow-up in v{}", renew_v.major()));
                    count += 1;
                    assert_eq!(r.response.version, renew_v);
                }
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_matrix_on_a_default_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let n = matrix(
        &node,
        true,
        true,
        &[Offer::Ndr32, Offer::Windows, Offer::Ndr64],
    )
    .await;
    assert_eq!(n, 3 * 3 * 2 * (1 + 3 + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_ndr64_serves_ndr32_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--ndr64", "false"]);
    matrix(
        &node,
        false,
        true,
        &[Offer::Ndr32, Offer::Windows, Offer::Ndr64],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_btfn_refuses_the_negotiation_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--btfn", "false"]);
    matrix(&node, true, false, &[Offer::Ndr32, Offer::Windows]).await;
}
