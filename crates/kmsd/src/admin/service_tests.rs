//! The admin service against a real single-node cluster (in process, no network): every call
//! through the `Admin` trait, the way tonic would dispatch it.

use std::sync::Arc;

use kms_api::admin::v1 as pb;
use kms_api::admin::v1::admin_server::Admin;
use kms_cluster::{Node, NodeSettings};
use kms_core::{Command, Guid, Pool, RecordRequest};
use kms_wire::FileTime;
use tonic::{Code, Request};

use super::*;
use crate::events::EventHub;

async fn start(dir: &std::path::Path) -> Arc<Node> {
    let node = Node::start(NodeSettings {
        data_dir: dir.to_path_buf(),
        ..NodeSettings::default()
    })
    .await
    .expect("node starts");
    Arc::new(node)
}

fn service(node: &Arc<Node>, hub: &EventHub) -> AdminService {
    AdminService {
        node: node.clone(),
        events: hub.clone(),
        security: AdminSecurity::Insecure,
        kms_ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    }
}

fn cmid(n: u8) -> Guid {
    Guid([n; 16])
}

async fn record(node: &Node, n: u8, pool: Pool, ws: &str) {
    let mut r = RecordRequest::new(u64::from(n) + 1000, pool, cmid(n));
    r.workstation = ws.into();
    r.kms_counted_id = "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap();
    node.writer()
        .write(Command::Record {
            at: FileTime::from_system_time(SystemTime::now()),
            node: 1,
            records: vec![r],
        })
        .await
        .expect("record");
}

async fn collect_backup(svc: &AdminService) -> Vec<u8> {
    let mut stream = svc
        .backup(Request::new(pb::BackupRequest { version: 1 }))
        .await
        .expect("backup")
        .into_inner();
    let mut bytes = Vec::new();
    use tokio_stream::StreamExt;
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk").data);
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_on_a_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let hub = EventHub::new(1);
    let svc = service(&node, &hub);
    for n in 1..=3 {
        record(&node, n, Pool::Windows, &format!("DESKTOP-{n}")).await;
    }
    record(&node, 9, Pool::Office2010, "OFFICE-9").await;

    // Status and members.
    let st = svc
        .status(Request::new(pb::StatusRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.leader_id, Some(1));
    assert_eq!(st.members.len(), 1);
    assert_eq!(st.members[0].role, pb::MemberRole::Leader as i32);
    assert!(st.members[0].voter && st.members[0].healthy);
    let windows = st.pools.iter().find(|p| p.pool == "windows").unwrap();
    assert_eq!((windows.live, windows.threshold), (3, 25));
    // A newer API version is refused.
    let e = svc
        .status(Request::new(pb::StatusRequest { version: 2 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Counts: N = 25 > 3, so three Windows clients wait.
    let c = svc
        .counts(Request::new(pb::CountsRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    let w = &c.pools[0];
    assert_eq!(
        (w.live, w.reported, w.waiting, w.threshold_met),
        (3, 3, 3, false)
    );
    assert_eq!(c.pools[1].stored, 1);

    // Clients: filters and paging.
    let list = |req: pb::ClientListRequest| {
        let svc = svc.clone();
        async move {
            svc.client_list(Request::new(req))
                .await
                .map(|r| r.into_inner())
        }
    };
    let all = list(pb::ClientListRequest {
        version: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(all.clients.len(), 4);
    assert!(all.next_cursor.is_empty());
    assert_eq!(all.clients[0].workstation, "DESKTOP-1");
    assert!(all.clients[0].live);
    assert_eq!(all.clients[0].product_group, "Windows 10/11 2015 (Volume)");
    let page = list(pb::ClientListRequest {
        version: 1,
        page_size: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(page.clients.len(), 2);
    let rest = list(pb::ClientListRequest {
        version: 1,
        cursor: page.next_cursor.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(rest.clients.len(), 2);
    assert_eq!(rest.clients[1].pool, "office2010");
    let found = list(pb::ClientListRequest {
        version: 1,
        workstation_contains: "desktop-2".into(),
        pool: "windows".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(found.clients.len(), 1);
    let e = list(pb::ClientListRequest {
        version: 1,
        pool: "linux".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Show and forget.
    let shown = svc
        .client_show(Request::new(pb::ClientShowRequest {
            version: 1,
            client_machine_id: cmid(2).to_string(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.records.len(), 1);
    let forgotten = svc
        .client_forget(Request::new(pb::ClientForgetRequest {
            version: 1,
            client_machine_id: cmid(2).to_string(),
            pool: String::new(),
        }))
        .await
        .unwrap();
    assert_eq!(
        forgotten.metadata().get(WARNING_HEADER).unwrap(),
        INSECURE_WARNING,
        "insecure changes carry a warning"
    );
    assert_eq!(forgotten.into_inner().forgotten[0].workstation, "DESKTOP-2");
    let e = svc
        .client_show(Request::new(pb::ClientShowRequest {
            version: 1,
            client_machine_id: cmid(2).to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = svc
        .client_forget(Request::new(pb::ClientForgetRequest {
            version: 1,
            client_machine_id: cmid(2).to_string(),
            pool: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(node.status().pools[0].live, 2);

    // Configuration.
    let set = |key: &str, value: &str| {
        let svc = svc.clone();
        let req = pb::ConfigSetRequest {
            version: 1,
            key: key.into(),
            value: value.into(),
        };
        async move {
            svc.config_set(Request::new(req))
                .await
                .map(|r| r.into_inner())
        }
    };
    let r = set("renewal-interval", "60").await.unwrap();
    assert_eq!(
        (r.old_value.as_str(), r.new_value.as_str()),
        ("10080", "60")
    );
    assert_eq!(node.read(|s| s.config().renewal_interval_minutes), 60);
    for (k, v) in [
        ("renewal-interval", "10"),
        ("no-such-key", "1"),
        ("count-report", "x"),
    ] {
        let e = set(k, v).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{k}={v}");
    }
    let e = set("renewal-interval", "10").await.unwrap_err();
    assert!(e.message().contains("15 … 43200"), "{}", e.message());
    set("seat-limit.windows", "100").await.unwrap();
    let got = svc
        .config_get(Request::new(pb::ConfigGetRequest {
            version: 1,
            key: "seat-limit.windows".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.entries[0].value, "100");
    let all = svc
        .config_get(Request::new(pb::ConfigGetRequest {
            version: 1,
            key: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(all.entries.len() >= 11);

    // Identity.
    let before = svc
        .identity_show(Request::new(pb::IdentityShowRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert!(before.initialized && !before.epids.is_empty());
    let after = svc
        .identity_set(Request::new(pb::IdentitySetRequest {
            version: 1,
            hwid: "0011223344556677".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.hwid, "0011223344556677");
    assert_eq!(
        node.read(|s| s.identity().unwrap().hwid),
        [0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]
    );
    let epid = "06401-00206-271-298329-03-1033-9600.0000-0452015";
    let after = svc
        .identity_set(Request::new(pb::IdentitySetRequest {
            version: 1,
            epid: epid.into(),
            group: 206,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(after.epids.iter().any(|e| e.epid == epid));
    for bad in [
        pb::IdentitySetRequest {
            version: 1,
            epid: epid.into(),
            group: 96,
            ..Default::default()
        },
        pb::IdentitySetRequest {
            version: 1,
            hwid: "xyz".into(),
            ..Default::default()
        },
        pb::IdentitySetRequest {
            version: 1,
            ..Default::default()
        },
    ] {
        let e = svc.identity_set(Request::new(bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let rotated = svc
        .identity_rotate(Request::new(pb::IdentityRotateRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.hwid, "0011223344556677");

    // Membership on a single node: add a learner, refuse a clash, remove it; the last voter
    // stays; a transfer to itself is a no-op.
    let added = svc
        .member_add(Request::new(pb::MemberAddRequest {
            version: 1,
            id: 2,
            grpc_address: "127.0.0.1:9".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        added.message.contains("added as learner"),
        "{}",
        added.message
    );
    let learner = added.members.iter().find(|m| m.id == 2).unwrap();
    assert_eq!(learner.role, pb::MemberRole::Learner as i32);
    let e = svc
        .member_add(Request::new(pb::MemberAddRequest {
            version: 1,
            id: 2,
            grpc_address: "127.0.0.1:10".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = svc
        .member_promote(Request::new(pb::MemberPromoteRequest {
            version: 1,
            id: 2,
            wait_secs: 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let removed = svc
        .member_remove(Request::new(pb::MemberRemoveRequest { version: 1, id: 2 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.members.len(), 1);
    let e = svc
        .member_remove(Request::new(pb::MemberRemoveRequest { version: 1, id: 1 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = svc
        .member_remove(Request::new(pb::MemberRemoveRequest { version: 1, id: 7 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let t = svc
        .leader_transfer(Request::new(pb::LeaderTransferRequest {
            version: 1,
            id: 1,
            wait_secs: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.leader_id, 1);

    // Health.
    let h = svc
        .health(Request::new(pb::HealthRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert!(h.serving && h.leader_known && !h.degraded, "{h:?}");
    // The same node while its KMS listener is down (starting, or draining on shutdown).
    let down = AdminService {
        kms_ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        ..service(&node, &hub)
    };
    let h = down
        .health(Request::new(pb::HealthRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert!(!h.serving && h.reason.starts_with("not serving"), "{h:?}");

    // Backup, then restore into a new node.
    let bytes = collect_backup(&svc).await;
    let contents = backup::decode(&bytes[..]).expect("a valid backup");
    assert_eq!(contents.clients.len(), 3);
    // The header names the log position the copied state reflects (the node is idle).
    let (at, _) = node.read_applied(|_| ());
    assert!(at.0 >= 1 && at.1 > 0, "{at:?}");
    assert_eq!((contents.header.term, contents.header.applied_index), at);
    let file = dir.path().join("cluster.kmsbak");
    std::fs::write(&file, &bytes).unwrap();
    let (config, identity, clients) = node.read(|s| {
        (
            s.config().clone(),
            s.identity().cloned(),
            s.export_clients().collect::<Vec<_>>(),
        )
    });
    let counts_a = svc
        .counts(Request::new(pb::CountsRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    node.shutdown().await;

    let dir_b = tempfile::tempdir().unwrap();
    let b = start(dir_b.path()).await;
    assert_ne!(b.read(|s| s.identity().cloned()), identity);
    let summary = restore(&b, &file).await.expect("restore");
    assert_eq!(
        summary,
        RestoreSummary::Restored {
            clients: 3,
            identity: true
        }
    );
    b.read(|s| {
        assert_eq!(s.config(), &config);
        assert_eq!(s.identity(), identity.as_ref());
        let restored: Vec<_> = s.export_clients().collect();
        assert_eq!(restored, clients);
    });
    let svc_b = service(&b, &EventHub::new(1));
    let counts_b = svc_b
        .counts(Request::new(pb::CountsRequest { version: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts_a.pools, counts_b.pools);
    // Restoring again is a no-op; a restore into a cluster with other clients is refused.
    assert_eq!(
        restore(&b, &file).await.unwrap(),
        RestoreSummary::AlreadyRestored
    );
    b.shutdown().await;
    let dir_c = tempfile::tempdir().unwrap();
    let c = start(dir_c.path()).await;
    record(&c, 77, Pool::Windows, "OTHER").await;
    assert!(matches!(
        restore(&c, &file).await,
        Err(RestoreError::NotEmpty { foreign: 1 })
    ));
    let bad = dir.path().join("bad.kmsbak");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        restore(&c, &bad).await,
        Err(RestoreError::Backup { .. })
    ));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_recent_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let hub = EventHub::new(1);
    let svc = service(&node, &hub);
    let event = |ws: &str| kms_host::ActivationEvent {
        event_id: 12290,
        hresult: 0,
        protocol: 6,
        syntax: "ndr64",
        required_client_count: 25,
        current_count: 1,
        workstation: ws.into(),
        client_machine_id: cmid(1),
        client_time: 0,
        is_vm: false,
        license_status: 1,
        binding_expiration: 0,
        sku_id: kms_wire::Guid::NIL,
        kms_counted_id: kms_wire::Guid::NIL,
        application_id: kms_wire::Guid::NIL,
        pool: Some("windows"),
        source: ([127, 0, 0, 1], 1).into(),
        reason: None,
        degraded: false,
        duration: Duration::from_micros(5),
    };
    hub.publish(&event("OLD"));
    use tokio_stream::StreamExt;
    let mut once = svc
        .events(Request::new(pb::EventsRequest {
            version: 1,
            recent: 0,
            follow: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let first = once.next().await.unwrap().unwrap();
    assert_eq!(first.event.unwrap().workstation, "OLD");
    assert!(
        once.next().await.is_none(),
        "without follow the stream ends"
    );

    let mut follow = svc
        .events(Request::new(pb::EventsRequest {
            version: 1,
            recent: 5,
            follow: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        follow
            .next()
            .await
            .unwrap()
            .unwrap()
            .event
            .unwrap()
            .workstation,
        "OLD"
    );
    hub.publish(&event("NEW"));
    let live = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .expect("a live event")
        .unwrap()
        .unwrap();
    assert_eq!(live.event.unwrap().workstation, "NEW");
    node.shutdown().await;
}
