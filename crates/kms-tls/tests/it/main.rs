//! kms-tls integration tests: a real tonic server built with `server_config` on 127.0.0.1:0
//! and real tonic channels built with `client_config` (or deliberately without it).
//!
//! The gRPC service is hand-written in the shape tonic-build generates, with prost's
//! built-in messages (`()` in, `String` out), so the test needs no proto and no other crate:
//! `/kms.test.v1.Probe/WhoAmI` answers the caller's role from `Request::peer_certs()`, and
//! `/kms.test.v1.Probe/Mutate` additionally runs `authorize(role, Action::Mutate)`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll};
use std::time::Duration;

use kms_tls::{
    Action, ClientRole, PemPair, Role, TlsFiles, authorize, client_config, create_ca,
    create_client, create_node, request_role, server_config,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{BoxFuture, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

const WHO_AM_I: &str = "/kms.test.v1.Probe/WhoAmI";
const MUTATE: &str = "/kms.test.v1.Probe/Mutate";

/// The probe service.
#[derive(Debug, Clone, Copy)]
struct Probe;

impl NamedService for Probe {
    const NAME: &'static str = "kms.test.v1.Probe";
}

/// One unary method: `mutate` decides whether `Action::Mutate` is authorized too.
#[derive(Debug, Clone, Copy)]
struct Method {
    mutate: bool,
}

impl UnaryService<()> for Method {
    type Response = String;
    type Future = BoxFuture<Response<String>, Status>;

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let mutate = self.mutate;
        Box::pin(async move {
            let role = request_role(&request)?;
            if mutate {
                authorize(role, Action::Mutate)?;
            }
            Ok(Response::new(role.to_string()))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for Probe
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = match req.uri().path() {
            WHO_AM_I => Method { mutate: false },
            MUTATE => Method { mutate: true },
            _ => {
                return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
            }
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, ()>::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// Every certificate the tests need, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: PemPair,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: create_ca("kmsd test CA", 2).unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Files for `pair` trusting `ca_cert`.
    fn files(&self, name: &str, ca_cert: &str, pair: &PemPair) -> TlsFiles {
        TlsFiles::new(
            self.write(&format!("{name}.ca.crt"), ca_cert),
            self.write(&format!("{name}.crt"), &pair.cert),
            self.write(&format!("{name}.key"), &pair.key),
        )
    }

    fn node(&self, name: &str) -> TlsFiles {
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let pair = create_node(&self.ca.cert, &self.ca.key, name, &hosts, 2).unwrap();
        self.files(name, &self.ca.cert, &pair)
    }

    fn client(&self, name: &str, role: ClientRole) -> TlsFiles {
        let pair = create_client(&self.ca.cert, &self.ca.key, name, role, 2).unwrap();
        self.files(name, &self.ca.cert, &pair)
    }
}

/// A running TLS server; dropping it shuts the server down.
struct TestServer {
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_server(files: &TlsFiles) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(server_config(files).unwrap())
        .unwrap()
        .add_service(Probe);
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    TestServer {
        addr,
        _shutdown: tx,
    }
}

/// Connect with `tls` (or in clear text with `None`) and call `path`; any failure, at
/// connect or at the call, as a `Status`.
async fn call(
    server: &TestServer,
    host: &str,
    tls: Option<ClientTlsConfig>,
    path: &'static str,
) -> Result<String, Status> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}:{}", server.addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e:?}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("ready: {e}")))?;
    let response = grpc
        .unary(
            Request::new(()),
            PathAndQuery::from_static(path),
            ProstCodec::<(), String>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

/// The call failed, and `needle` appears in the error or its source chain (the TLS alert or
/// verification failure that caused it).
fn assert_refused(result: Result<String, Status>, needle: &str) {
    let err = result.expect_err("must be refused");
    let text = format!("{err:?}");
    assert!(text.contains(needle), "expected `{needle}` in {text}");
}

fn client_tls(files: &TlsFiles) -> Option<ClientTlsConfig> {
    Some(client_config(files, None).unwrap())
}

#[tokio::test]
async fn ca_signed_clients_connect_and_carry_their_role() {
    let pki = Pki::new();
    let server = start_server(&pki.node("kms1")).await;

    let admin = pki.client("ops", ClientRole::Admin);
    assert_eq!(
        call(&server, "127.0.0.1", client_tls(&admin), WHO_AM_I)
            .await
            .unwrap(),
        "admin"
    );
    assert_eq!(
        call(&server, "localhost", client_tls(&admin), MUTATE)
            .await
            .unwrap(),
        "admin"
    );

    let read = pki.client("grafana", ClientRole::Read);
    assert_eq!(
        call(&server, "127.0.0.1", client_tls(&read), WHO_AM_I)
            .await
            .unwrap(),
        "read"
    );
    let refused = call(&server, "127.0.0.1", client_tls(&read), MUTATE)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().starts_with(
            "certificate role 'read' may not change the cluster; use an admin certificate"
        ),
        "{refused:?}"
    );

    // A peer node dials with its own node certificate.
    let peer = pki.node("kms2");
    assert_eq!(
        call(&server, "127.0.0.1", client_tls(&peer), MUTATE)
            .await
            .unwrap(),
        Role::Node.to_string()
    );
}

#[tokio::test]
async fn clients_without_a_certificate_are_rejected() {
    let pki = Pki::new();
    let server = start_server(&pki.node("kms1")).await;
    // Trusts the server, presents nothing.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca.cert));
    assert_refused(
        call(&server, "127.0.0.1", Some(tls), WHO_AM_I).await,
        "CertificateRequired",
    );
}

#[tokio::test]
async fn clients_of_another_ca_are_rejected() {
    let pki = Pki::new();
    let server = start_server(&pki.node("kms1")).await;
    let other = create_ca("other CA", 2).unwrap();
    let intruder = create_client(&other.cert, &other.key, "mallory", ClientRole::Admin, 2).unwrap();
    // The intruder trusts our CA (so the server passes its checks) but its own certificate
    // comes from another CA.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca.cert))
        .identity(tonic::transport::Identity::from_pem(
            &intruder.cert,
            &intruder.key,
        ));
    assert_refused(
        call(&server, "127.0.0.1", Some(tls), WHO_AM_I).await,
        "UnknownCA",
    );
    // kms-tls itself refuses to build that client configuration.
    let files = pki.files("mallory", &pki.ca.cert, &intruder);
    assert!(client_config(&files, None).is_err());
}

#[tokio::test]
async fn a_server_of_another_ca_or_name_is_not_trusted() {
    let pki = Pki::new();
    let server = start_server(&pki.node("kms1")).await;
    let admin = pki.client("ops", ClientRole::Admin);

    // The client checks the server's name: the node certificate names kms1, localhost and
    // 127.0.0.1, not kms9.
    let tls = client_config(&admin, Some("kms9.example.net")).unwrap();
    assert_refused(
        call(&server, "127.0.0.1", Some(tls), WHO_AM_I).await,
        "NotValidForName",
    );
    let tls = client_config(&admin, Some("kms1")).unwrap();
    assert_eq!(
        call(&server, "127.0.0.1", Some(tls), WHO_AM_I)
            .await
            .unwrap(),
        "admin"
    );

    // A client of a different cluster does not trust this server.
    let other = Pki::new();
    let stranger = other.client("ops", ClientRole::Admin);
    assert_refused(
        call(&server, "127.0.0.1", client_tls(&stranger), WHO_AM_I).await,
        "InvalidCertificate",
    );
}

#[tokio::test]
async fn clear_text_is_not_served() {
    let pki = Pki::new();
    let server = start_server(&pki.node("kms1")).await;
    let err = call(&server, "127.0.0.1", None, WHO_AM_I)
        .await
        .unwrap_err();
    // Refused by the transport (no TLS handshake), never reaching the handler, which would
    // have answered UNAUTHENTICATED.
    assert!(
        !matches!(
            err.code(),
            Code::Ok | Code::Unauthenticated | Code::PermissionDenied
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn node_directory_layout_loads() {
    let pki = Pki::new();
    let node = pki.node("kms1");
    let dir = pki.dir.path().join("node-dir");
    std::fs::create_dir(&dir).unwrap();
    for (from, to) in [
        (&node.ca, "ca.crt"),
        (&node.cert, "node.crt"),
        (&node.key, "node.key"),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    let files = TlsFiles::node_dir(Path::new(&dir));
    let server = start_server(&files).await;
    let admin = pki.client("ops", ClientRole::Admin);
    assert_eq!(
        call(&server, "localhost", client_tls(&admin), WHO_AM_I)
            .await
            .unwrap(),
        "admin"
    );
}
