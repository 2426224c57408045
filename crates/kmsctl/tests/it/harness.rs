//! A tiny KMS host for tests, built only from kms-wire's host side
//! (`rpc::Association`, `kms::decode_request`, `kms::encode_response`), served on
//! 127.0.0.1:0. Dropping the [`TestKms`] aborts the accept loop and every connection.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use kms_wire::kms::{self, ProtocolVersion, ResponseFields, ResponseRandomness};
use kms_wire::rpc::{self, Association, HostAction, HostConfig, PendingCall, Syntax};
use kms_wire::{FileTime, Guid, Hresult};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use kmsctl::cli::{ActivateArgs, BenchArgs, Cli, Command};

/// The ePID the test host answers with.
pub const EPID: &str = "06401-00206-271-298329-03-1033-9600.0000-0452015";
/// The HwId the test host answers with.
pub const HWID: [u8; 8] = [0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76];

/// How the test host answers calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// A correct response; the count is the number of distinct CMIDs seen.
    Grant,
    /// Refuse every call with this HRESULT.
    Refuse(Hresult),
    /// A correct response with one bit flipped in the middle of the KMS message.
    FlipByte,
    /// A correct response with one bit flipped in the last byte of the KMS message.
    FlipLastByte,
    /// A correct response whose RPC call_id is wrong.
    WrongCallId,
}

/// Test host configuration.
#[derive(Debug, Clone, Copy)]
pub struct HostOptions {
    /// Accept NDR64.
    pub ndr64: bool,
    /// Acknowledge BTFN.
    pub btfn: bool,
    /// How to answer.
    pub behavior: Behavior,
    /// Close each connection after this many calls (py-kms closes after one).
    pub close_after_calls: Option<u32>,
    /// Refuse requests whose time differs from ours by more than this (0xC004F06C).
    pub time_window: Option<Duration>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            ndr64: true,
            btfn: true,
            behavior: Behavior::Grant,
            close_after_calls: None,
            time_window: Some(Duration::from_secs(4 * 3600)),
        }
    }
}

/// One call the host saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Transfer syntax of the REQUEST.
    pub syntax: Syntax,
    /// CMID.
    pub cmid: Guid,
    /// Required count.
    pub required_count: u32,
    /// Workstation name.
    pub workstation: String,
    /// VM flag.
    pub is_vm: u32,
    /// License status.
    pub license_status: u32,
    /// KMS counted id.
    pub kms_counted_id: Guid,
}

#[derive(Debug, Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    cmids: Mutex<HashSet<Guid>>,
    connections: Mutex<u64>,
}

/// A running test host.
#[derive(Debug)]
pub struct TestKms {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for TestKms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestKms {
    /// Start a host.
    pub async fn start(opts: HostOptions) -> TestKms {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        *st.connections.lock().unwrap() += 1;
                        conns.spawn(serve(stream, opts, st.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TestKms { addr, state, task }
    }

    /// `--kms` argument for this host.
    pub fn kms_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Calls seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self.state.connections.lock().unwrap()
    }
}

async fn serve(mut stream: TcpStream, opts: HostOptions, state: Arc<State>) {
    let port = stream.local_addr().map(|a| a.port()).unwrap_or(1688);
    let config = HostConfig {
        listen_port: port,
        ndr64: opts.ndr64,
        btfn: opts.btfn,
        max_pdu: rpc::DEFAULT_MAX_PDU,
    };
    let mut assoc = Association::new(config, 0x1235);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut calls = 0u32;
    loop {
        loop {
            let n = match rpc::frame_len(&buf, config.max_pdu) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(_) => return,
            };
            let (reply, was_call) = match assoc.on_pdu(&buf[..n]) {
                HostAction::Reply(b) => (b, false),
                HostAction::Call(call) => (answer(call, &opts, &state), true),
                HostAction::Continue => (Vec::new(), false),
                HostAction::Close(_) => return,
            };
            buf.drain(..n);
            if stream.write_all(&reply).await.is_err() {
                return;
            }
            if was_call {
                calls += 1;
                if opts.close_after_calls.is_some_and(|c| calls >= c) {
                    return;
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn answer(call: PendingCall<'_>, opts: &HostOptions, state: &State) -> Vec<u8> {
    let decoded = match kms::decode_request(call.kms_message()) {
        Ok(d) => d,
        Err(e) => return call.respond(Err(e.hresult())),
    };
    let req = &decoded.request;
    state.seen.lock().unwrap().push(Seen {
        version: req.version,
        syntax: call.syntax(),
        cmid: req.client_machine_id,
        required_count: req.required_client_count,
        workstation: req.workstation_name.clone(),
        is_vm: req.is_client_vm,
        license_status: req.license_status,
        kms_counted_id: req.kms_counted_id,
    });
    if let Behavior::Refuse(h) = opts.behavior {
        return call.respond(Err(h));
    }
    if let Some(w) = opts.time_window {
        let now = FileTime::from_system_time(SystemTime::now());
        if now.abs_diff_secs(req.request_time) > w.as_secs() {
            return call.respond(Err(Hresult::INVALID_TIMESTAMP));
        }
    }
    let count = {
        let mut cmids = state.cmids.lock().unwrap();
        cmids.insert(req.client_machine_id);
        u32::try_from(cmids.len()).unwrap()
    };
    let fields = ResponseFields {
        epid: EPID,
        current_count: count,
        activation_interval: 120,
        renewal_interval: 10080,
    };
    let mut randomness = ResponseRandomness {
        random: [0; 16],
        v6_response_iv: [0; 16],
    };
    rand::rng().fill_bytes(&mut randomness.random);
    rand::rng().fill_bytes(&mut randomness.v6_response_iv);
    let mut bytes = kms::encode_response(&decoded, &fields, HWID, &randomness).expect("encode");
    match opts.behavior {
        Behavior::FlipByte => {
            let i = bytes.len() / 2;
            bytes[i] ^= 0x01;
        }
        Behavior::FlipLastByte => {
            if let Some(b) = bytes.last_mut() {
                *b ^= 0x01;
            }
        }
        _ => {}
    }
    let mut pdu = call.respond(Ok(&bytes));
    if opts.behavior == Behavior::WrongCallId {
        pdu[12] ^= 0x40; // call_id is at offset 12 of every PDU
    }
    pdu
}

/// Parse `kmsctl activate <args>`.
pub fn activate_args(args: &[&str]) -> ActivateArgs {
    let argv = ["kmsctl", "activate"].iter().chain(args).copied();
    match Cli::try_parse_from(argv)
        .expect("valid activate args")
        .command
    {
        Command::Activate(a) => a,
        other => panic!("not activate: {other:?}"),
    }
}

/// Parse `kmsctl bench <args>`.
pub fn bench_args(args: &[&str]) -> BenchArgs {
    let argv = ["kmsctl", "bench"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).expect("valid bench args").command {
        Command::Bench(a) => a,
        other => panic!("not bench: {other:?}"),
    }
}
