//! The admin side of the connection: credentials from a folder (`ca.crt`, `client.crt`, `client.key`, and
//! optionally `controller` holding the URL), as written by `rollcall-controller init` into `DATA/admin/`.

use std::path::{Path, PathBuf};

use rollcall_proto::v1::admin_service_client::AdminServiceClient;
use rollcall_proto::{ClientIdentity, ServerTrust};
use tonic::transport::Channel;

use super::usage;

/// A connected admin client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    pub rpc: AdminServiceClient<Channel>,
    pub url: String,
}

impl AdminClient {
    /// Connect with the credentials in `creds`; `url` overrides the `controller` file there.
    pub async fn connect(url: Option<&str>, creds: &Path) -> anyhow::Result<AdminClient> {
        if !creds.join("client.crt").exists() {
            return Err(usage(format!(
                "no admin credentials in {} (expected ca.crt, client.crt, client.key: copy DATA/admin/ from the controller, or pass --creds DIR)",
                creds.display()
            )));
        }
        let url = match url {
            Some(u) => u.to_owned(),
            None => std::fs::read_to_string(creds.join("controller"))
                .map(|s| s.trim().to_owned())
                .map_err(|_| {
                    usage(format!(
                        "no controller address: pass --controller https://HOST:PORT, set ROLLCALL_CONTROLLER, or put the URL in {}",
                        creds.join("controller").display()
                    ))
                })?,
        };
        let trust = ServerTrust::ca_pem_file(&creds.join("ca.crt"))?;
        let identity =
            ClientIdentity::from_pem_files(&creds.join("client.crt"), &creds.join("client.key"))?;
        let channel = rollcall_proto::connect(&url, trust, Some(identity)).await?;
        Ok(AdminClient {
            rpc: AdminServiceClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            url,
        })
    }
}

/// Default credentials folder: `$ROLLCALL_CREDS`, else `~/.config/rollcall`.
pub fn default_creds() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config/rollcall"))
        .unwrap_or_else(|| PathBuf::from(".rollcall"))
}
