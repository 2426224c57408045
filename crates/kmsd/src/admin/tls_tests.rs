//! The admin service behind a real tonic server with mutual TLS: certificate roles decide
//! (`read` looks, `admin` changes, no certificate is refused), and refusals say why.

use std::sync::Arc;

use kms_api::admin::v1 as pb;
use kms_api::admin::v1::admin_client::AdminClient;
use kms_cluster::{Node, NodeSettings};
use kms_tls::{ClientRole, PemPair, TlsFiles};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server};

use super::*;
use crate::events::EventHub;

fn write(dir: &std::path::Path, name: &str, pair: &PemPair, ca: &PemPair) -> TlsFiles {
    let files = TlsFiles::new(
        dir.join("ca.crt"),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&files.ca, &ca.cert).unwrap();
    std::fs::write(&files.cert, &pair.cert).unwrap();
    std::fs::write(&files.key, &pair.key).unwrap();
    files
}

async fn client(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> AdminClient<Channel> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection");
    AdminClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_roles_decide() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(
        Node::start(NodeSettings {
            data_dir: dir.path().join("data"),
            ..NodeSettings::default()
        })
        .await
        .unwrap(),
    );
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = kms_tls::create_ca("test CA", 2).unwrap();
    let server_pair =
        kms_tls::create_node(&ca.cert, &ca.key, "kms1", &["127.0.0.1".into()], 2).unwrap();
    let admin = kms_tls::create_client(&ca.cert, &ca.key, "ops", ClientRole::Admin, 2).unwrap();
    let read = kms_tls::create_client(&ca.cert, &ca.key, "grafana", ClientRole::Read, 2).unwrap();
    let server_files = write(&certs, "node", &server_pair, &ca);
    let admin_files = write(&certs, "client.ops", &admin, &ca);
    let read_files = write(&certs, "client.grafana", &read, &ca);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = admin_service(
        node.clone(),
        EventHub::new(1),
        AdminSecurity::MutualTls,
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let server = Server::builder()
        .tls_config(kms_tls::server_config(&server_files).unwrap())
        .unwrap()
        .add_service(svc)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);

    let mut reader = client(addr, kms_tls::client_config(&read_files, None).unwrap()).await;
    let mut operator = client(addr, kms_tls::client_config(&admin_files, None).unwrap()).await;

    // read: looks, but may not change anything or take a backup.
    let st = reader
        .status(pb::StatusRequest { version: 1 })
        .await
        .expect("read may look")
        .into_inner();
    assert_eq!(st.leader_id, Some(1));
    let set = pb::ConfigSetRequest {
        version: 1,
        key: "renewal-interval".into(),
        value: "60".into(),
    };
    let e = reader.config_set(set.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("'read' may not change the cluster"),
        "{}",
        e.message()
    );
    let e = reader
        .backup(pb::BackupRequest { version: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("backups"), "{}", e.message());
    assert_eq!(node.read(|s| s.config().renewal_interval_minutes), 10_080);

    // admin: changes, with no insecure warning.
    let r = operator.config_set(set).await.expect("admin may change");
    assert!(r.metadata().get(WARNING_HEADER).is_none());
    assert_eq!(node.read(|s| s.config().renewal_interval_minutes), 60);
    operator
        .backup(pb::BackupRequest { version: 1 })
        .await
        .expect("admin may take backups");

    // No client certificate: the handshake is refused (client auth is mandatory).
    let anonymous =
        ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert));
    let refused = async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(anonymous)
            .unwrap()
            .connect()
            .await
            .ok()?;
        AdminClient::new(channel)
            .status(pb::StatusRequest { version: 1 })
            .await
            .ok()
    }
    .await;
    assert!(
        refused.is_none(),
        "a caller without a certificate got an answer"
    );

    server.abort();
    node.shutdown().await;
}
