//! `matvisfs csi`: a Kubernetes CSI node plugin (Identity and Node
//! services, spec v1.x, gRPC on a unix socket). A published volume is a
//! read-only `matvisfs mount` at the target path, run in the background as
//! a process of its own, every volume of the node sharing the node's cache;
//! the plugin only starts, finds and stops those mounts. No controller:
//! volumes are static (a PersistentVolume naming its attributes) or inline
//! in a pod.

pub mod attributes;
pub mod launcher;
mod service;
pub mod volumes;

use std::path::{Path, PathBuf};

use crate::cli::CsiArgs;
use crate::logging;

/// The generated messages, servers and clients of proto/csi.proto.
pub mod proto {
    tonic::include_proto!("csi.v1");

    impl std::fmt::Debug for NodePublishVolumeRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NodePublishVolumeRequest")
                .field("volume_id", &self.volume_id)
                .field("target_path", &self.target_path)
                .field("volume_capability", &self.volume_capability)
                .field("readonly", &self.readonly)
                .field("volume_context", &self.volume_context)
                .field("publish_context", &self.publish_context)
                // Never their values.
                .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
                .finish_non_exhaustive()
        }
    }
}

/// The plugin's name, as the CSIDriver object and every PersistentVolume
/// name it (`driver:`).
pub const DRIVER_NAME: &str = "matvisfs.csi.mat-vis.org";

/// Where the kubelet finds the plugin's socket in a standard deployment
/// (deploy/ mounts the plugin directory there).
pub const DEFAULT_SOCKET: &str = "/csi/csi.sock";

/// The socket path of `unix:///path` (or of a plain path).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(path) => path,
        None if endpoint.contains("://") => {
            return Err(format!(
                "--endpoint {endpoint:?}: only unix:///PATH is served"
            ));
        }
        None => endpoint,
    };
    if !path.starts_with('/') {
        return Err(format!(
            "--endpoint {endpoint:?}: the socket path must be absolute"
        ));
    }
    Ok(PathBuf::from(path))
}

/// `matvisfs csi`.
pub fn run(args: CsiArgs) -> Result<(), String> {
    logging::to_stderr(logging::MOUNT_LEVEL + args.verbose);
    if args.node_id.is_empty() {
        return Err("--node-id is empty".into());
    }
    let socket = socket_path(&args.endpoint)?;
    let cache = args.cache.dir()?;
    let volumes = volumes::Volumes::open(
        &args.state_dir,
        &cache,
        args.cache.cache_max_size,
        args.mount_launcher.as_deref(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(service::serve(&socket, args.node_id, volumes))?;
    remove_socket(&socket);
    Ok(())
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "cannot remove the socket: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            Path::new(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            Path::new("/tmp/x.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:10000").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let request = proto::NodePublishVolumeRequest {
            secrets: [("token".to_string(), "hf_secret_value".to_string())].into(),
            ..Default::default()
        };
        let shown = format!("{request:?}");
        assert!(
            shown.contains("token") && !shown.contains("hf_secret_value"),
            "{shown}"
        );
    }
}
