//! The gRPC services: requests checked as the CSI spec asks, then handed
//! to [`Volumes`] on a blocking thread (mounting waits for a process).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::attributes::{KUBELET_PREFIX, TOKEN_SECRET, Volume};
use super::proto::identity_server::{Identity, IdentityServer};
use super::proto::node_server::{Node, NodeServer};
use super::proto::volume_capability::AccessType;
use super::proto::volume_capability::access_mode::Mode;
use super::proto::*;
use super::volumes::{Refusal, Volumes};
use super::{DRIVER_NAME, remove_socket};

/// Serves both services on `socket` until SIGTERM or SIGINT. Mounts stay.
pub async fn serve(socket: &Path, node_id: String, volumes: Volumes) -> Result<(), String> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    // A socket left by a plugin that was killed.
    remove_socket(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    tracing::info!(socket = %socket.display(), node = node_id, "serving CSI");
    let node = NodeService {
        node_id,
        volumes: Arc::new(volumes),
    };
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped())
        .await
        .map_err(|e| format!("the gRPC server failed: {e}"))
}

async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping; the published volumes stay mounted");
}

struct IdentityService;

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::new(),
        }))
    }

    /// Neither a controller nor topology: volumes are static and every
    /// node reaches the dataset.
    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

struct NodeService {
    node_id: String,
    volumes: Arc<Volumes>,
}

fn status(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Invalid(m) => Status::invalid_argument(m),
        Refusal::AlreadyExists(m) => Status::already_exists(m),
        Refusal::NotFound(m) => Status::not_found(m),
        Refusal::Aborted(m) => Status::aborted(m),
        Refusal::Internal(m) => Status::internal(m),
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("the call failed: {e}")))?
        .map_err(status)
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::Invalid(message.into())
}

fn required<'a>(value: &'a str, name: &str) -> Result<&'a str, Refusal> {
    if value.is_empty() {
        return Err(invalid(format!("{name} is missing")));
    }
    Ok(value)
}

fn absolute(path: &str, name: &str) -> Result<PathBuf, Refusal> {
    let path = Path::new(required(path, name)?);
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{name} {} is not absolute",
            path.display()
        )));
    }
    Ok(path.to_path_buf())
}

/// The tree is read-only: a mode that writes is accepted only where the
/// publication itself is read-only (the kubelet asks SINGLE_NODE_WRITER of
/// every inline volume, `readOnly: true` in the pod makes it read-only).
fn check_capability(capability: Option<&VolumeCapability>, readonly: bool) -> Result<(), Refusal> {
    let capability = capability.ok_or_else(|| invalid("volume_capability is missing"))?;
    match &capability.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Err(invalid(
                "volume_capability: block access is not offered, only a mounted filesystem",
            ));
        }
        None => {
            return Err(invalid("volume_capability: no access type"));
        }
    }
    let mode = capability
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown);
    match mode {
        Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => Ok(()),
        Mode::Unknown => Err(invalid(
            "volume_capability: the access mode is missing or unknown",
        )),
        writer if readonly => {
            tracing::debug!(
                mode = writer.as_str_name(),
                "a writer mode, published read-only"
            );
            Ok(())
        }
        writer => Err(invalid(format!(
            "volume_capability: access mode {} writes, and the volume is read-only \
             (use ReadOnlyMany, or readOnly: true)",
            writer.as_str_name()
        ))),
    }
}

/// The token of the volume's secret, if it has one; other keys are refused.
fn token(secrets: &HashMap<String, String>) -> Result<Option<String>, Refusal> {
    for key in secrets.keys() {
        if key != TOKEN_SECRET {
            return Err(invalid(format!(
                "unknown key {key:?} in the volume's secret; known: {TOKEN_SECRET}"
            )));
        }
    }
    Ok(secrets
        .get(TOKEN_SECRET)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = required(&request.volume_id, "volume_id")
            .map_err(status)?
            .to_string();
        let target = absolute(&request.target_path, "target_path").map_err(status)?;
        if !request.staging_target_path.is_empty() {
            return Err(Status::invalid_argument(
                "staging_target_path is set, and this plugin offers no staging",
            ));
        }
        check_capability(request.volume_capability.as_ref(), request.readonly).map_err(status)?;
        let volume = Volume::parse(&request.volume_context).map_err(Status::invalid_argument)?;
        let token = token(&request.secrets).map_err(status)?;
        let ephemeral = request
            .volume_context
            .get(&format!("{KUBELET_PREFIX}ephemeral"))
            .is_some_and(|v| v == "true");
        tracing::info!(volume = volume_id, target = %target.display(), ephemeral, tags = ?volume.tags, "publishing");
        let volumes = self.volumes.clone();
        blocking(move || volumes.publish(&volume_id, &target, &volume, token.as_deref())).await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = required(&request.volume_id, "volume_id")
            .map_err(status)?
            .to_string();
        let target = absolute(&request.target_path, "target_path").map_err(status)?;
        let volumes = self.volumes.clone();
        blocking(move || volumes.unpublish(&volume_id, &target)).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    /// The node's shared cache (bytes and files, against the cap), which
    /// every volume reads through; abnormal when the mount does not answer.
    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        let volume_id = required(&request.volume_id, "volume_id")
            .map_err(status)?
            .to_string();
        let path = absolute(&request.volume_path, "volume_path").map_err(status)?;
        let volumes = self.volumes.clone();
        let usage = blocking(move || volumes.usage(&volume_id, &path)).await?;
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (total, available) = match usage.cap {
            0 => (0, 0),
            cap => (signed(cap), signed(cap.saturating_sub(usage.bytes))),
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available,
                    total,
                    used: signed(usage.bytes),
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: 0,
                    total: 0,
                    used: signed(usage.files),
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(VolumeCondition {
                abnormal: usage.abnormal.is_some(),
                message: usage.abnormal.unwrap_or_else(|| "serving".into()),
            }),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::{Rpc, Type, rpc};
        let capability = |t: rpc::Type| NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                capability(rpc::Type::GetVolumeStats),
                capability(rpc::Type::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
