//! `matvisfs csi`: the CSI contract over the plugin's real unix socket,
//! spoken by a client generated from the same proto, with real mounts
//! against the test server. Every test leaves no mount and no process
//! behind, even when it fails: the plugin and the mounts it made are
//! guarded, killed and detached on drop.

// The client's calls return tonic's own Status, as the plugin sent it.
#![allow(clippy::result_large_err)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::watchdog;
use common::{BIN, Served, TAG, is_mounted, read, serving_processes, wait_for};
use matvisfs::csi::attributes::{
    BASE_URL, CACHE_MAX_SIZE, KUBELET_PREFIX, OFFLINE, REPO, REVALIDATE_EVERY, TAGS, TOKEN_SECRET,
};
use matvisfs::csi::proto::identity_client::IdentityClient;
use matvisfs::csi::proto::node_client::NodeClient;
use matvisfs::csi::proto::volume_capability::access_mode::Mode;
use matvisfs::csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use matvisfs::csi::proto::*;
use tonic::Code;
use tonic::transport::Channel;

const TOKEN: &str = "hf_csiTestTokenThatMustNeverShow0123456789";
const LIMIT: Duration = Duration::from_secs(180);

/// A `matvisfs csi` process on a socket of its own; killed when dropped.
struct Driver {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Driver {
    fn start(dir: &Path) -> Driver {
        Driver::start_in(dir, None, None)
    }

    /// A plugin started in `container` (a cgroup of its own, as a
    /// container's processes are), starting mounts through `launcher`.
    fn start_in(dir: &Path, container: Option<&Cgroup>, launcher: Option<&str>) -> Driver {
        let socket = dir.join("plugin/csi.sock");
        let log = dir.join(format!("driver-{}.log", fs::read_dir(dir).unwrap().count()));
        let mut command = match container {
            // Joins the cgroup, then becomes the plugin (the same process).
            Some(cgroup) => {
                let mut command = Command::new("/bin/sh");
                command
                    .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                    .arg(cgroup.procs_file())
                    .arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        if let Some(launcher) = launcher {
            command.env("MATVISFS_MOUNT_LAUNCHER", launcher);
        } else {
            command.env_remove("MATVISFS_MOUNT_LAUNCHER");
        }
        let child = command
            .arg("csi")
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .args(["--node-id", "node-1", "-v"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .env_remove("MATVISFS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut driver = Driver { child, socket, log };
        let socket = driver.socket.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = driver.child.try_wait().unwrap() {
                panic!("the plugin exited with {status}: {}", driver.log());
            }
            assert!(Instant::now() < deadline, "no socket: {}", driver.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        driver
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- plugin log ---\n{}--- end ---", self.log());
        }
        self.kill();
    }
}

/// Targets the tests publish to: whatever serves them is killed and they
/// are detached when dropped.
#[derive(Default)]
struct Targets(Vec<PathBuf>);

impl Targets {
    fn add(&mut self, path: PathBuf) -> PathBuf {
        watchdog::track(&path);
        self.0.push(path.clone());
        path
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for target in &self.0 {
            for pid in serving_processes(target) {
                // SAFETY: sending a signal has no memory effects.
                // SAFETY: sending a signal has no memory effects.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            if is_mounted(target) {
                let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            common::remove_control_socket(target);
            watchdog::untrack(target);
        }
    }
}

/// A cgroup of the v1 `pids` hierarchy, made for one test: a container
/// (the runtime ends a container by killing every process of its cgroup),
/// or the host's place for mounts that the test's launcher moves them to.
/// Every process left in it is killed, and it is removed, when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let path = Path::new("/sys/fs/cgroup/pids").join(format!(
            "matvisfs-csi-test-{}-{}-{name}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Cgroup(path)
    }

    fn procs_file(&self) -> PathBuf {
        self.0.join("cgroup.procs")
    }

    fn processes(&self) -> Vec<i32> {
        fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// What the container runtime does when a container goes: SIGKILL to
    /// every process of its cgroup, until none is left. Whether it emptied.
    fn kill_everything(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let processes = self.processes();
            if processes.is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            for pid in processes {
                // SAFETY: sending a signal has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_everything();
        let deadline = Instant::now() + Duration::from_secs(20);
        while fs::remove_dir(&self.0).is_err() && self.0.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A client of both services over the plugin's socket.
struct Client {
    runtime: tokio::runtime::Runtime,
    identity: IdentityClient<Channel>,
    node: NodeClient<Channel>,
    channel: Channel,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = socket.to_path_buf();
        let channel = runtime
            .block_on(
                tonic::transport::Endpoint::from_static("http://[::]:50051")
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    })),
            )
            .unwrap();
        Client {
            runtime,
            identity: IdentityClient::new(channel.clone()),
            node: NodeClient::new(channel.clone()),
            channel,
        }
    }

    fn publish(&mut self, request: NodePublishVolumeRequest) -> Result<(), tonic::Status> {
        self.runtime
            .block_on(self.node.node_publish_volume(request))
            .map(drop)
    }

    fn unpublish(&mut self, volume_id: &str, target: &Path) -> Result<(), tonic::Status> {
        let request = NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: target.display().to_string(),
        };
        self.runtime
            .block_on(self.node.node_unpublish_volume(request))
            .map(drop)
    }

    fn stats(
        &mut self,
        volume_id: &str,
        path: &Path,
    ) -> Result<NodeGetVolumeStatsResponse, tonic::Status> {
        let request = NodeGetVolumeStatsRequest {
            volume_id: volume_id.into(),
            volume_path: path.display().to_string(),
            staging_target_path: String::new(),
        };
        self.runtime
            .block_on(self.node.node_get_volume_stats(request))
            .map(|r| r.into_inner())
    }
}

fn capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn publish_request(
    volume_id: &str,
    target: &Path,
    context: &[(&str, &str)],
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability(Mode::MultiNodeReaderOnly)),
        readonly: true,
        volume_context: context
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Every texture of the release read through `target`, compared.
fn read_all(served: &Served, target: &Path) -> usize {
    let mut count = 0;
    for (path, bytes) in served.release.textures() {
        let got = read(&target.join(TAG).join(path)).unwrap();
        assert_eq!(&got, bytes, "{path}");
        count += 1;
    }
    count
}

/// Waits until the downloads of the mount at `target` are durable (synced
/// and in the store's index, where other mounts of the cache find them).
fn wait_until_durable(target: &Path) {
    wait_for(
        "the downloads to be durable",
        Duration::from_secs(10),
        || {
            let stats = read(&target.join(".matvisfs/stats.json")).unwrap();
            serde_json::from_slice::<serde_json::Value>(&stats).unwrap()["cache"]["pending"] == 0
        },
    );
}

/// Command lines of every process, and whether any holds `needle`.
fn any_cmdline_contains(needle: &str) -> bool {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .any(|e| {
            fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
}

/// Every file under `dir`, with its text.
fn texts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(texts_under(&path));
        } else if let Ok(bytes) = fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[test]
fn identity_node_info_and_capabilities_follow_the_spec() {
    watchdog::bounded(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);
        let rt = &client.runtime;
        let info = rt
            .block_on(client.identity.get_plugin_info(GetPluginInfoRequest {}))
            .unwrap()
            .into_inner();
        assert_eq!(info.name, matvisfs::csi::DRIVER_NAME);
        assert!(!info.vendor_version.is_empty());
        let probe = rt
            .block_on(client.identity.probe(ProbeRequest {}))
            .unwrap()
            .into_inner();
        assert_eq!(probe.ready, Some(true));
        let plugin = rt
            .block_on(
                client
                    .identity
                    .get_plugin_capabilities(GetPluginCapabilitiesRequest {}),
            )
            .unwrap()
            .into_inner();
        assert!(plugin.capabilities.is_empty(), "no controller, no topology");
        let node = rt
            .block_on(client.node.node_get_info(NodeGetInfoRequest {}))
            .unwrap()
            .into_inner();
        assert_eq!(node.node_id, "node-1");
        let capabilities: Vec<i32> = rt
            .block_on(
                client
                    .node
                    .node_get_capabilities(NodeGetCapabilitiesRequest {}),
            )
            .unwrap()
            .into_inner()
            .capabilities
            .into_iter()
            .filter_map(|c| {
                c.r#type
                    .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type)
            })
            .collect();
        use node_service_capability::rpc::Type;
        assert!(capabilities.contains(&(Type::GetVolumeStats as i32)));
        assert!(!capabilities.contains(&(Type::StageUnstageVolume as i32)));

        // Staging is not offered: the call is UNIMPLEMENTED.
        let mut grpc = tonic::client::Grpc::new(client.channel.clone());
        let staged: Result<tonic::Response<()>, tonic::Status> = client.runtime.block_on(async {
            grpc.ready().await.unwrap();
            grpc.unary(
                tonic::Request::new(()),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/csi.v1.Node/NodeStageVolume",
                ),
                tonic::codec::ProstCodec::<(), ()>::default(),
            )
            .await
        });
        assert_eq!(staged.unwrap_err().code(), Code::Unimplemented);
    });
}

#[test]
fn a_published_volume_serves_the_tree_outlives_a_killed_plugin_and_unpublishes() {
    watchdog::bounded(LIMIT, || {
        let served = Served::small();
        let dir = tempfile::tempdir().unwrap();
        let mut targets = Targets::default();
        let target = targets.add(dir.path().join("pods/p1/volumes/v/mount"));
        let mut driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);

        let base = served.base_url();
        let context = [(TAGS, TAG), (BASE_URL, base.as_str())];
        let mut request = publish_request("vol-1", &target, &context);
        request.secrets = HashMap::from([(TOKEN_SECRET.to_string(), TOKEN.to_string())]);
        client.publish(request.clone()).unwrap();
        assert!(is_mounted(&target));
        // The same again: success, the same mount.
        client.publish(request.clone()).unwrap();
        assert_eq!(serving_processes(&target).len(), 1);
        // Other attributes at the same target: ALREADY_EXISTS.
        let mut other = publish_request("vol-1", &target, &[(TAGS, "v2026.05.0")]);
        other.secrets = request.secrets.clone();
        assert_eq!(
            client.publish(other).unwrap_err().code(),
            Code::AlreadyExists
        );

        assert!(read_all(&served, &target) > 0);
        let stats = client.stats("vol-1", &target).unwrap();
        let condition = stats.volume_condition.unwrap();
        assert!(!condition.abnormal, "{}", condition.message);
        let bytes = stats
            .usage
            .iter()
            .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
            .unwrap();
        let cached: usize = served.release.textures().map(|(_, b)| b.len()).sum();
        wait_for(
            "the cache to hold the reads",
            Duration::from_secs(10),
            || client.stats("vol-1", &target).unwrap().usage[0].used as usize >= cached,
        );
        assert!(bytes.total > 0, "the default cap is the total");

        // The token: on no command line, in no log, in no file left.
        assert!(!any_cmdline_contains(TOKEN));
        assert!(!driver.log().contains(TOKEN));
        for (path, text) in texts_under(&dir.path().join("state")) {
            assert!(!text.contains(TOKEN), "{}", path.display());
        }

        // The plugin killed: the mount still serves.
        // SAFETY: sending a signal has no memory effects.
        unsafe { libc::kill(driver.child.id() as i32, libc::SIGKILL) };
        driver.kill();
        assert!(is_mounted(&target));
        assert!(read_all(&served, &target) > 0);
        assert_eq!(serving_processes(&target).len(), 1);

        // A new plugin finds it: statistics, then unpublish.
        let driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);
        assert!(
            !client
                .stats("vol-1", &target)
                .unwrap()
                .volume_condition
                .unwrap()
                .abnormal
        );
        assert_eq!(
            client.stats("vol-2", &target).unwrap_err().code(),
            Code::NotFound
        );
        client.unpublish("vol-1", &target).unwrap();
        assert!(!is_mounted(&target));
        assert!(
            serving_processes(&target).is_empty(),
            "the mount's process exited"
        );
        assert!(!target.exists(), "the target is removed");
        client.unpublish("vol-1", &target).unwrap();
        assert!(!driver.log().contains(TOKEN));
        assert!(!any_cmdline_contains(TOKEN));
    });
}

#[test]
fn a_volume_whose_mount_died_is_mounted_again_by_the_next_publish() {
    watchdog::bounded(LIMIT, || {
        let served = Served::small();
        let dir = tempfile::tempdir().unwrap();
        let mut targets = Targets::default();
        let target = targets.add(dir.path().join("pods/p/mount"));
        let driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);
        let base = served.base_url();
        let request = publish_request("vol", &target, &[(TAGS, TAG), (BASE_URL, &base)]);
        client.publish(request.clone()).unwrap();
        let files = read_all(&served, &target);
        // A killed mount would lose the downloads not yet durable; this
        // test is not about that.
        wait_until_durable(&target);

        for pid in serving_processes(&target) {
            // SAFETY: sending a signal has no memory effects.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        wait_for(
            "the mount's process to end",
            Duration::from_secs(10),
            || serving_processes(&target).is_empty(),
        );
        let stats = client.stats("vol", &target).unwrap();
        assert!(
            stats.volume_condition.unwrap().abnormal,
            "a dead mount is abnormal"
        );

        client.publish(request).unwrap();
        assert_eq!(serving_processes(&target).len(), 1);
        let downloads = served.texture_gets();
        assert_eq!(read_all(&served, &target), files);
        assert_eq!(
            served.texture_gets(),
            downloads,
            "served from the node's cache"
        );
        assert!(
            !client
                .stats("vol", &target)
                .unwrap()
                .volume_condition
                .unwrap()
                .abnormal
        );
        client.unpublish("vol", &target).unwrap();
        assert!(!is_mounted(&target));
    });
}

#[test]
fn volumes_on_one_node_share_its_cache() {
    watchdog::bounded(LIMIT, || {
        let served = Served::small();
        let dir = tempfile::tempdir().unwrap();
        let mut targets = Targets::default();
        let first = targets.add(dir.path().join("pods/a/mount"));
        let second = targets.add(dir.path().join("pods/b/mount"));
        let driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);
        let base = served.base_url();

        client
            .publish(publish_request(
                "dataset",
                &first,
                &[(TAGS, TAG), (BASE_URL, &base)],
            ))
            .unwrap();
        // An inline volume of another pod: the kubelet's own keys and the
        // writer mode it asks of every inline volume, read-only.
        let mut inline = publish_request(
            "csi-0123abcd",
            &second,
            &[
                (TAGS, TAG),
                (BASE_URL, &base),
                (&format!("{KUBELET_PREFIX}ephemeral"), "true"),
                (&format!("{KUBELET_PREFIX}pod.name"), "render-7"),
                (&format!("{KUBELET_PREFIX}pod.namespace"), "farm"),
                (&format!("{KUBELET_PREFIX}pod.uid"), "8d7f0c2e"),
                (&format!("{KUBELET_PREFIX}serviceAccount.name"), "default"),
            ],
        );
        inline.volume_capability = Some(capability(Mode::SingleNodeWriter));
        client.publish(inline).unwrap();

        let files = read_all(&served, &first);
        let downloads = served.texture_gets();
        assert_eq!(downloads, files, "each file downloaded once");
        // Another process sees a download once it is durable.
        wait_until_durable(&first);
        assert_eq!(read_all(&served, &second), files);
        assert_eq!(
            served.texture_gets(),
            downloads,
            "the second volume downloads nothing"
        );

        client.unpublish("dataset", &first).unwrap();
        client.unpublish("csi-0123abcd", &second).unwrap();
        assert!(!is_mounted(&first) && !is_mounted(&second));
    });
}

#[test]
fn each_bad_request_is_an_invalid_argument_naming_what_is_wrong() {
    watchdog::bounded(LIMIT, || {
        let served = Served::small();
        let dir = tempfile::tempdir().unwrap();
        let mut targets = Targets::default();
        let target = targets.add(dir.path().join("pods/x/mount"));
        let driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);
        let base = served.base_url();
        let good = [(TAGS, TAG), (BASE_URL, base.as_str())];

        let with = |change: &dyn Fn(&mut NodePublishVolumeRequest)| {
            let mut request = publish_request("vol", &target, &good);
            change(&mut request);
            request
        };
        let cases: Vec<(NodePublishVolumeRequest, &str)> = vec![
            (
                publish_request("vol", &target, &[(TAGS, TAG), ("colour", "red")]),
                "colour",
            ),
            (
                publish_request("vol", &target, &[(TAGS, TAG), (BASE_URL, "ftp://mirror/x")]),
                BASE_URL,
            ),
            (
                publish_request("vol", &target, &[(TAGS, "v1,../escape"), (BASE_URL, &base)]),
                TAGS,
            ),
            (publish_request("vol", &target, &[(REPO, "a/b/c")]), REPO),
            (
                publish_request("vol", &target, &[(TAGS, TAG), (REVALIDATE_EVERY, "often")]),
                REVALIDATE_EVERY,
            ),
            (
                publish_request("vol", &target, &[(TAGS, TAG), (OFFLINE, "maybe")]),
                OFFLINE,
            ),
            (
                publish_request("vol", &target, &[(TAGS, TAG), (CACHE_MAX_SIZE, "huge")]),
                CACHE_MAX_SIZE,
            ),
            (
                with(&|r| {
                    r.volume_capability = Some(capability(Mode::SingleNodeWriter));
                    r.readonly = false;
                }),
                "SINGLE_NODE_WRITER",
            ),
            (
                with(&|r| {
                    r.volume_capability = Some(capability(Mode::MultiNodeMultiWriter));
                    r.readonly = false;
                }),
                "MULTI_NODE_MULTI_WRITER",
            ),
            (
                with(&|r| {
                    r.volume_capability = Some(VolumeCapability {
                        access_type: Some(AccessType::Block(BlockVolume {})),
                        access_mode: Some(AccessMode {
                            mode: Mode::MultiNodeReaderOnly as i32,
                        }),
                    })
                }),
                "block",
            ),
            (with(&|r| r.volume_capability = None), "volume_capability"),
            (with(&|r| r.volume_id.clear()), "volume_id"),
            (
                with(&|r| r.target_path = "relative/mount".into()),
                "target_path",
            ),
            (
                with(&|r| r.secrets = HashMap::from([("password".to_string(), TOKEN.to_string())])),
                "password",
            ),
        ];
        for (request, named) in cases {
            let status = client.publish(request).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{named}: {status:?}");
            assert!(
                status.message().contains(named),
                "{named}: {}",
                status.message()
            );
            assert!(!status.message().contains(TOKEN));
        }
        assert!(!is_mounted(&target));
        assert!(
            !target.exists(),
            "nothing was created for a refused request"
        );
        assert_eq!(served.texture_gets(), 0);
        // And a good one still works after them.
        client
            .publish(publish_request("vol", &target, &good))
            .unwrap();
        client.unpublish("vol", &target).unwrap();
        assert!(!is_mounted(&target));
    });
}

#[test]
fn a_volume_is_revalidated_every_period_its_attribute_names() {
    watchdog::bounded(LIMIT, || {
        let mut served = Served::small();
        let dir = tempfile::tempdir().unwrap();
        let mut targets = Targets::default();
        let target = targets.add(dir.path().join("pods/p1/volumes/v/mount"));
        let driver = Driver::start(dir.path());
        let mut client = Client::connect(&driver.socket);
        let base = served.base_url();
        let context = [
            (TAGS, TAG),
            (BASE_URL, base.as_str()),
            (REVALIDATE_EVERY, "1s"),
        ];
        client
            .publish(publish_request("vol-1", &target, &context))
            .unwrap();
        let pids = serving_processes(&target);
        assert_eq!(pids.len(), 1);
        let cmdline = fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        assert!(
            args.windows(2)
                .any(|w| w == [b"--revalidate-every".as_slice(), b"1s".as_slice()]),
            "{}",
            String::from_utf8_lossy(&cmdline)
        );
        // The period applies: a change is seen at the first open after it.
        let path = "ambientcg/512/Wood051/ao.png";
        assert_eq!(
            read(&target.join(TAG).join(path)).unwrap(),
            served.release.files[path]
        );
        let mut release = served.release.clone();
        let new = matvisfs_sample::images::png("every", "ao", 40);
        release.files.insert(path.into(), new.clone());
        served.republish(release);
        wait_for("the change, after the period", LIMIT, || {
            read(&target.join(TAG).join(path)).is_ok_and(|bytes| bytes == new)
        });
        client.unpublish("vol-1", &target).unwrap();
        assert!(!is_mounted(&target));
    });
}

/// A launcher as `--mount-launcher` takes one: a script that records the
/// name it is given, moves itself into `host` (out of the plugin's
/// cgroup, as `systemd-run --scope` moves a mount into a unit of the
/// host's) and runs the rest of its words.
fn write_launcher(dir: &Path, host: &Cgroup) -> (String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("launch");
    let named = dir.join("launched");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\nshift\necho $$ > '{}' || exit 1\nexec \"$@\"\n",
            named.display(),
            host.procs_file().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (format!("{} {{volume}}", script.display()), named)
}

/// The name the plugin gives a target's files and its launcher: the first
/// half of the target path's SHA-256.
fn target_key(target: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(target.as_os_str().as_encoded_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A volume published by a plugin in a container of its own; then the
/// container replaced (every process of its cgroup killed, as the runtime
/// does on a DaemonSet update) and a new plugin started in a new one.
/// Through a launcher the mount lives outside the container and outlives
/// it; without one, it ends with the container.
fn replace_the_plugins_container(launched: bool) {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let mut targets = Targets::default();
    let target = targets.add(dir.path().join("pods/p1/volumes/v/mount"));
    let first_container = Cgroup::new("container-1");
    let second_container = Cgroup::new("container-2");
    let host = Cgroup::new("host");
    let (launcher, named) = write_launcher(dir.path(), &host);
    let launcher = launched.then_some(launcher.as_str());

    let mut driver = Driver::start_in(dir.path(), Some(&first_container), launcher);
    let mut client = Client::connect(&driver.socket);
    let base = served.base_url();
    let mut request = publish_request("vol-1", &target, &[(TAGS, TAG), (BASE_URL, &base)]);
    request.secrets = HashMap::from([(TOKEN_SECRET.to_string(), TOKEN.to_string())]);
    client.publish(request).unwrap();
    let files = read_all(&served, &target);
    assert!(files > 0);
    wait_until_durable(&target);
    let pids = serving_processes(&target);
    assert_eq!(pids.len(), 1);
    let mount = pids[0] as i32;
    assert!(!any_cmdline_contains(TOKEN));
    if launched {
        // Outside the container, running the plugin's own bytes from a
        // copy in the state directory, the target named to the launcher.
        assert!(host.processes().contains(&mount));
        assert!(!first_container.processes().contains(&mount));
        let cmdline = fs::read(format!("/proc/{mount}/cmdline")).unwrap();
        let program = PathBuf::from(
            String::from_utf8_lossy(cmdline.split(|&b| b == 0).next().unwrap()).into_owned(),
        );
        assert!(
            program.starts_with(dir.path().join("state")),
            "{}",
            program.display()
        );
        assert!(
            fs::read(&program).unwrap() == fs::read(BIN).unwrap(),
            "the copy is this program"
        );
        assert_eq!(
            fs::read_to_string(&named).unwrap().trim(),
            target_key(&target)
        );
    } else {
        assert!(first_container.processes().contains(&mount));
    }

    assert!(!driver.log().contains(TOKEN));

    // The container replaced.
    assert!(first_container.kill_everything(), "the container emptied");
    driver.kill();
    drop(client);

    if launched {
        assert!(is_mounted(&target));
        assert_eq!(read_all(&served, &target), files, "the mount still serves");
        assert_eq!(serving_processes(&target), [mount as u32]);
    } else {
        wait_for(
            "the mount's process to end",
            Duration::from_secs(10),
            || serving_processes(&target).is_empty(),
        );
        let (path, _) = served.release.textures().next().unwrap();
        let error = read(&target.join(TAG).join(path)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOTCONN), "{error}");
    }

    // A new plugin in a new container finds the volume, and unpublishes
    // it: the mount and its process gone.
    let driver = Driver::start_in(dir.path(), Some(&second_container), launcher);
    let mut client = Client::connect(&driver.socket);
    let condition = client
        .stats("vol-1", &target)
        .unwrap()
        .volume_condition
        .unwrap();
    assert_eq!(condition.abnormal, !launched, "{}", condition.message);
    client.unpublish("vol-1", &target).unwrap();
    assert!(!is_mounted(&target));
    assert!(
        serving_processes(&target).is_empty(),
        "the mount's process exited"
    );
    // Its last threads may still be on their way out of the kernel.
    wait_for(
        "the host's cgroup to empty",
        Duration::from_secs(10),
        || host.processes().is_empty(),
    );
    assert!(!target.exists());
    assert!(!driver.log().contains(TOKEN));
}

#[test]
fn a_mount_started_through_the_launcher_outlives_the_plugins_container() {
    watchdog::bounded(LIMIT, || replace_the_plugins_container(true));
}

#[test]
fn without_a_launcher_replacing_the_plugins_container_ends_its_mounts() {
    watchdog::bounded(LIMIT, || replace_the_plugins_container(false));
}

#[test]
fn a_mount_the_plugin_cannot_see_is_refused_and_ended() {
    watchdog::bounded(LIMIT, || {
        // A launcher whose mounts land in a mount namespace of their own,
        // as they would on a host whose kubelet directory the plugin's
        // container does not share: the pod would get an empty directory.
        let served = Served::small();
        let dir = tempfile::tempdir().unwrap();
        let mut targets = Targets::default();
        let target = targets.add(dir.path().join("pods/p/mount"));
        let launcher = "unshare --mount --propagation private --";
        let driver = Driver::start_in(dir.path(), None, Some(launcher));
        let mut client = Client::connect(&driver.socket);
        let base = served.base_url();
        let request = publish_request("vol", &target, &[(TAGS, TAG), (BASE_URL, &base)]);
        let status = client.publish(request).unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(!is_mounted(&target));
        wait_for(
            "the unseen mount's process to end",
            Duration::from_secs(10),
            || serving_processes(&target).is_empty(),
        );
        // Not recorded: nothing to find or unpublish.
        assert_eq!(
            client.stats("vol", &target).unwrap_err().code(),
            Code::NotFound
        );
    });
}
