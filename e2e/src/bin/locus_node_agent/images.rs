//! The images file: which local executable stands for which container image.
//!
//! ```yaml
//! images:
//!   locus/test-server:dev:
//!     entrypoint: ["/abs/path/target/debug/locus-test-server"]  # used when the container has no `command`
//!     binaries:                                                 # optional: resolves `command[0]`
//!       /locus-test-server: /abs/path/target/debug/locus-test-server
//! ```
//!
//! Resolution follows Kubernetes: a container's `command` replaces the entrypoint (its
//! first word is looked up in `binaries`), and `args` are appended. An image named
//! without a tag also matches the same image with `:latest`. The file is re-read when it
//! changes, so a mapping added while the agent runs is picked up on the next start
//! attempt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

/// The parsed images file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagesFile {
    /// Image reference → how to run it.
    #[serde(default)]
    pub images: BTreeMap<String, ImageEntry>,
}

/// How to run one image.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// The image's entrypoint: an absolute executable path, then its fixed arguments.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Paths a container `command[0]` may name → local executables.
    #[serde(default)]
    pub binaries: BTreeMap<String, PathBuf>,
}

/// The program and arguments a container runs, resolved from its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The local executable.
    pub program: PathBuf,
    /// Its arguments (without the program).
    pub args: Vec<String>,
}

/// Why a container's image or command could not be resolved.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The image has no mapping: reported as `ErrImagePull` / `ImagePullBackOff`.
    #[error(
        "image {image:?} is not in the images file {file}: this node runs images as local \
         executables, so add a mapping for it there (images: {image:?}: entrypoint: \
         [\"/abs/path/to/binary\"])"
    )]
    NoMapping {
        /// The image.
        image: String,
        /// The images file.
        file: String,
    },
    /// `command[0]` is not among the image's `binaries`.
    #[error(
        "command {command:?} is not among the binaries of image {image:?} in the images file \
         {file}: add `binaries: {{{command:?}: /abs/path}}` to the image's entry"
    )]
    UnknownCommand {
        /// The image.
        image: String,
        /// The container's `command[0]`.
        command: String,
        /// The images file.
        file: String,
    },
    /// Neither `command` nor an entrypoint.
    #[error(
        "image {image:?} has no entrypoint in the images file {file} and the container sets \
         no command"
    )]
    NoEntrypoint {
        /// The image.
        image: String,
        /// The images file.
        file: String,
    },
}

impl ResolveError {
    /// Whether this is the image-pull kind of failure (no mapping at all).
    pub fn is_pull_error(&self) -> bool {
        matches!(self, Self::NoMapping { .. })
    }
}

/// Why the images file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The file could not be read.
    #[error("cannot read the images file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid images file.
    #[error("the images file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl ImagesFile {
    /// Parses and checks an images file's text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ImagesError> {
        let invalid = |reason: String| ImagesError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let file: Self = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (image, entry) in &file.images {
            if let Some(program) = entry.entrypoint.first()
                && !Path::new(program).is_absolute()
            {
                return Err(invalid(format!(
                    "the entrypoint of image {image:?} must start with an absolute path, got {program:?}"
                )));
            }
            if entry.entrypoint.is_empty() && entry.binaries.is_empty() {
                return Err(invalid(format!(
                    "image {image:?} needs an entrypoint or binaries"
                )));
            }
            if let Some((name, local)) = entry.binaries.iter().find(|(_, p)| !p.is_absolute()) {
                return Err(invalid(format!(
                    "binary {name:?} of image {image:?} must map to an absolute path, got {}",
                    local.display()
                )));
            }
        }
        Ok(file)
    }

    fn entry(&self, image: &str) -> Option<&ImageEntry> {
        self.images.get(image).or_else(|| {
            let last = image.rsplit('/').next().unwrap_or(image);
            if last.contains(':') || image.contains('@') {
                None
            } else {
                self.images.get(&format!("{image}:latest"))
            }
        })
    }

    /// The program and arguments of a container, as Kubernetes would run them.
    pub fn resolve(
        &self,
        file: &Path,
        image: &str,
        command: &[String],
        args: &[String],
    ) -> Result<Resolved, ResolveError> {
        let file = file.display().to_string();
        let entry = self.entry(image).ok_or_else(|| ResolveError::NoMapping {
            image: image.to_string(),
            file: file.clone(),
        })?;
        let (program, fixed) = if let Some((first, rest)) = command.split_first() {
            let program =
                entry
                    .binaries
                    .get(first)
                    .ok_or_else(|| ResolveError::UnknownCommand {
                        image: image.to_string(),
                        command: first.clone(),
                        file: file.clone(),
                    })?;
            (program.clone(), rest)
        } else if let Some((first, rest)) = entry.entrypoint.split_first() {
            (PathBuf::from(first), rest)
        } else {
            return Err(ResolveError::NoEntrypoint {
                image: image.to_string(),
                file,
            });
        };
        Ok(Resolved {
            program,
            args: fixed.iter().chain(args).cloned().collect(),
        })
    }
}

/// Reads an images file.
pub fn load(path: &Path) -> Result<ImagesFile, ImagesError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImagesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    ImagesFile::parse(&text, path)
}

/// The images file, re-read when its modification time changes; the last good version
/// is kept when a new one is invalid.
#[derive(Debug)]
pub struct Images {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, ImagesFile)>,
}

impl Images {
    /// Loads the file, failing if it is unreadable or invalid.
    pub fn open(path: &Path) -> Result<Self, ImagesError> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let file = load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            cached: Mutex::new((mtime, file)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current mapping (re-read if the file changed).
    pub fn current(&self) -> ImagesFile {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if mtime.is_some() && mtime != cached.0 {
            match load(&self.path) {
                Ok(file) => *cached = (mtime, file),
                Err(e) => {
                    tracing::warn!("keeping the previous images mapping: {e}");
                    cached.0 = mtime;
                }
            }
        }
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
images:
  locus/test-server:dev:
    entrypoint: ["/bin/server", "--fixed"]
    binaries:
      /locus-test-server: /bin/server
  plain:latest:
    entrypoint: ["/bin/plain"]
"#;

    fn file() -> ImagesFile {
        ImagesFile::parse(TEXT, Path::new("/i.yaml")).unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn entrypoint_plus_args_when_no_command() {
        let r = file()
            .resolve(
                Path::new("/i.yaml"),
                "locus/test-server:dev",
                &[],
                &s(&["a"]),
            )
            .unwrap();
        assert_eq!(r.program, PathBuf::from("/bin/server"));
        assert_eq!(r.args, s(&["--fixed", "a"]));
    }

    #[test]
    fn command_replaces_entrypoint_through_binaries() {
        let r = file()
            .resolve(
                Path::new("/i.yaml"),
                "locus/test-server:dev",
                &s(&["/locus-test-server", "x"]),
                &s(&["y"]),
            )
            .unwrap();
        assert_eq!(r.program, PathBuf::from("/bin/server"));
        assert_eq!(r.args, s(&["x", "y"]));
        let err = file()
            .resolve(
                Path::new("/i.yaml"),
                "locus/test-server:dev",
                &s(&["/bin/sh"]),
                &[],
            )
            .unwrap_err();
        assert!(!err.is_pull_error());
        assert!(err.to_string().contains("/bin/sh"), "{err}");
    }

    #[test]
    fn unmapped_image_names_image_and_file() {
        let err = file()
            .resolve(Path::new("/i.yaml"), "nginx:1.27", &[], &[])
            .unwrap_err();
        assert!(err.is_pull_error());
        let msg = err.to_string();
        assert!(
            msg.contains("nginx:1.27") && msg.contains("/i.yaml"),
            "{msg}"
        );
    }

    #[test]
    fn untagged_image_means_latest() {
        let r = file()
            .resolve(Path::new("/i.yaml"), "plain", &[], &[])
            .unwrap();
        assert_eq!(r.program, PathBuf::from("/bin/plain"));
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let p = Path::new("/i.yaml");
        assert!(ImagesFile::parse("images: [1, 2]", p).is_err());
        let relative = "images:\n  x:\n    entrypoint: [\"server\"]\n";
        let err = ImagesFile::parse(relative, p).unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
        assert!(ImagesFile::parse("images:\n  x: {}\n", p).is_err());
        assert!(ImagesFile::parse("imagez: {}\n", p).is_err());
    }
}
