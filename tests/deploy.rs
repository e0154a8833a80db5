//! deploy/: every manifest parses, and names what the plugin's own code
//! expects (driver name, socket, state and cache directories, environment
//! variables, volume attributes, the secret's key), each taken from the
//! code so that the two cannot drift. Example volumes' attributes are
//! checked by the plugin's own parser.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use matvisfs::cli::{Cli, DEFAULT_STATE_DIR};
use matvisfs::csi::attributes::{ATTRIBUTES, TOKEN_SECRET, Volume};
use matvisfs::csi::launcher::VOLUME_PLACEHOLDER;
use matvisfs::csi::{DEFAULT_SOCKET, DRIVER_NAME};
use serde::Deserialize;
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every document of every manifest under deploy/.
fn documents() -> Vec<(PathBuf, Value)> {
    let files = yaml_files(Path::new(DEPLOY));
    assert!(files.len() >= 5, "{files:?}");
    let mut documents = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

fn of_kind(documents: &[(PathBuf, Value)], kind: &str) -> Vec<Value> {
    documents
        .iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d.clone())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The environment variable behind `matvisfs csi --LONG`.
fn csi_env(long: &str) -> String {
    let command = Cli::command();
    let csi = command.find_subcommand("csi").unwrap();
    let argument = csi
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .unwrap_or_else(|| panic!("matvisfs csi has no --{long}"));
    argument
        .get_env()
        .unwrap_or_else(|| panic!("--{long} reads no variable"))
        .to_string_lossy()
        .into_owned()
}

fn attributes_of(csi: &Value) -> HashMap<String, String> {
    csi["volumeAttributes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn the_csidriver_object_names_the_plugin() {
    let documents = documents();
    let drivers = of_kind(&documents, "CSIDriver");
    assert_eq!(drivers.len(), 1);
    let driver = &drivers[0];
    assert_eq!(driver["metadata"]["name"], DRIVER_NAME);
    assert_eq!(driver["spec"]["attachRequired"], false);
    assert_eq!(driver["spec"]["podInfoOnMount"], true);
    let modes = strings(&driver["spec"]["volumeLifecycleModes"]);
    assert!(modes.contains(&"Persistent".into()) && modes.contains(&"Ephemeral".into()));
}

#[test]
fn the_daemonset_gives_the_plugin_its_socket_directories_and_fuse() {
    let documents = documents();
    let sets = of_kind(&documents, "DaemonSet");
    assert_eq!(sets.len(), 1);
    let pod = &sets[0]["spec"]["template"]["spec"];
    let volumes: HashMap<String, Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    let host_path = |name: &str| {
        volumes[name]["hostPath"]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let containers = pod["containers"].as_array().unwrap();
    let plugin = containers
        .iter()
        .find(|c| {
            c["command"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a.as_str().is_some_and(|a| a.contains("matvisfs csi")))
        })
        .expect("a container running matvisfs csi");
    let env: HashMap<String, Value> = plugin["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    // Where the plugin's mounts are, by the host path behind them.
    let mounted_at = |container: &Value, host: &str| -> Option<String> {
        container["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| {
                volumes
                    .get(m["name"].as_str().unwrap())
                    .is_some_and(|v| v["hostPath"]["path"] == host)
            })
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
    };

    // The socket: in the kubelet's plugin directory of this driver.
    let plugin_dir = format!("/var/lib/kubelet/plugins/{DRIVER_NAME}");
    assert_eq!(
        env[&csi_env("endpoint")]["value"],
        format!("unix://{DEFAULT_SOCKET}")
    );
    let socket_dir = Path::new(DEFAULT_SOCKET)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(mounted_at(plugin, &plugin_dir).as_deref(), Some(socket_dir));
    assert_eq!(
        env[&csi_env("node-id")]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    // The registrar: the same socket, and where the kubelet finds it.
    let registrar = containers
        .iter()
        .find(|c| {
            c["image"]
                .as_str()
                .unwrap()
                .contains("csi-node-driver-registrar")
        })
        .expect("the node-driver-registrar");
    let args = strings(&registrar["args"]);
    assert!(
        args.contains(&format!("--csi-address={DEFAULT_SOCKET}")),
        "{args:?}"
    );
    assert!(
        args.contains(&format!(
            "--kubelet-registration-path={plugin_dir}/csi.sock"
        )),
        "{args:?}"
    );
    assert_eq!(
        mounted_at(registrar, &plugin_dir).as_deref(),
        Some(socket_dir)
    );
    assert_eq!(
        mounted_at(registrar, "/var/lib/kubelet/plugins_registry").as_deref(),
        Some("/registration")
    );

    // Privileged, /dev/fuse, the kubelet's directory shared both ways.
    assert_eq!(plugin["securityContext"]["privileged"], true);
    assert_eq!(volumes["fuse-device"]["hostPath"]["type"], "CharDevice");
    assert_eq!(host_path("fuse-device"), "/dev/fuse");
    let kubelet = plugin["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kubelet")
        .expect("the kubelet directory");
    assert_eq!(kubelet["mountPropagation"], "Bidirectional");
    assert_eq!(
        host_path(kubelet["name"].as_str().unwrap()),
        "/var/lib/kubelet"
    );

    // One cache per node: the cache directory variable names a host path.
    let cache = env[&csi_env("cache-dir")]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let cache_volume = plugin["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == cache.as_str())
        .expect("the cache directory is mounted");
    // At the same path as on the host: the mounts run there.
    assert_eq!(host_path(cache_volume["name"].as_str().unwrap()), cache);
    // The state directory (its default), kept on the host across restarts.
    assert_eq!(
        mounted_at(plugin, DEFAULT_STATE_DIR).as_deref(),
        Some(DEFAULT_STATE_DIR)
    );
    // The cap's variable parses as a size.
    let cap = env[&csi_env("cache-max-size")]["value"].as_str().unwrap();
    matvisfs::size::parse_size(cap).unwrap();

    // Mounts outlive the pod: each starts in the host's namespaces (the
    // network too: the pod's goes with it), as a scope of the host's
    // systemd named after its target, from a copy of the program in the
    // state directory; the plugin sees the host's processes to find them.
    // So the pod may be replaced by a rolling update.
    assert_eq!(pod["hostPID"], true);
    assert_eq!(sets[0]["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let launcher = env[&csi_env("mount-launcher")]["value"].as_str().unwrap();
    let words: Vec<&str> = launcher.split_whitespace().collect();
    let (nsenter, systemd_run) = words.split_at(
        words
            .iter()
            .position(|w| *w == "systemd-run")
            .expect("systemd-run"),
    );
    assert_eq!(nsenter[..3], ["nsenter", "--target", "1"], "{launcher}");
    for namespace in ["--mount", "--net", "--pid", "--cgroup"] {
        assert!(nsenter.contains(&namespace), "{namespace}: {launcher}");
    }
    assert_eq!(nsenter.last(), Some(&"--"), "{launcher}");
    assert!(systemd_run.contains(&"--scope"), "{launcher}");
    assert!(
        systemd_run.contains(&format!("--unit=matvisfs-{VOLUME_PLACEHOLDER}").as_str()),
        "{launcher}"
    );
    assert_eq!(systemd_run.last(), Some(&"--"), "{launcher}");
    // The tini the plugin runs under reaps as a subreaper: it is not PID 1.
    assert!(strings(&plugin["command"]).contains(&"-s".to_string()));
}

#[test]
fn example_volumes_name_the_driver_and_attributes_it_accepts() {
    let documents = documents();
    let mut volumes = Vec::new();
    for pv in of_kind(&documents, "PersistentVolume") {
        assert_eq!(strings(&pv["spec"]["accessModes"]), ["ReadOnlyMany"]);
        volumes.push(pv["spec"]["csi"].clone());
    }
    for kind in ["Pod", "Job"] {
        for object in of_kind(&documents, kind) {
            let pod = match kind {
                "Job" => object["spec"]["template"]["spec"].clone(),
                _ => object["spec"].clone(),
            };
            for volume in pod["volumes"].as_array().unwrap() {
                if volume["csi"].is_object() {
                    assert_eq!(
                        volume["csi"]["readOnly"], true,
                        "inline volumes are read-only"
                    );
                    volumes.push(volume["csi"].clone());
                }
            }
            for container in pod["containers"].as_array().unwrap() {
                for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                    assert_eq!(mount["readOnly"], true);
                }
            }
        }
    }
    assert!(volumes.len() >= 2, "a persistent and an inline example");
    let secrets = of_kind(&documents, "Secret");
    for csi in &volumes {
        assert_eq!(csi["driver"], DRIVER_NAME);
        let attributes = attributes_of(csi);
        for key in attributes.keys() {
            assert!(ATTRIBUTES.contains(&key.as_str()), "{key}");
        }
        Volume::parse(&attributes).unwrap();
        if let Some(reference) = csi["nodePublishSecretRef"].as_object() {
            let secret = secrets
                .iter()
                .find(|s| s["metadata"]["name"] == reference["name"])
                .expect("the secret the volume names");
            let keys: Vec<&String> = secret["stringData"].as_object().unwrap().keys().collect();
            assert_eq!(keys, [TOKEN_SECRET]);
        }
    }
}

#[test]
fn the_image_is_built_in_two_stages_with_fuse() {
    let dockerfile = fs::read_to_string(Path::new(DEPLOY).join("Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2);
    assert!(dockerfile.contains("COPY --from=build"));
    for package in ["fuse3", "tini", "ca-certificates", "util-linux"] {
        assert!(dockerfile.contains(package), "{package}");
    }
    // The DaemonSet runs what the image holds, stripped: the plugin keeps a
    // copy of it on the node for each version that runs mounts.
    assert!(dockerfile.contains("/usr/local/bin/matvisfs"));
    assert!(dockerfile.contains("install -D --strip"));
    let node = fs::read_to_string(Path::new(DEPLOY).join("kubernetes/node.yaml")).unwrap();
    assert!(node.contains("/usr/bin/tini"));
}
