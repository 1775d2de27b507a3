//! `keygen`: an Ed25519 key pair, the private key written with mode 0600 from creation on.

use std::path::Path;

use iosetu_license::LicenseSigner;

use crate::common::{Failure, io, write_new};

pub(crate) fn run(out: &Path, kid: Option<String>, force: bool) -> Result<(), Failure> {
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let signer = LicenseSigner::generate().map_err(|e| Failure::usage(e.to_string()))?;
    let stem = kid.clone().unwrap_or_else(|| "license".to_owned());
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        return Err(Failure::usage(format!("--kid {stem:?} cannot name a file")));
    }
    let private = out.join(format!("{stem}.key.pem"));
    let public = out.join(format!("{stem}.pub.pem"));
    let private_pem = signer
        .private_key_pem()
        .map_err(|e| Failure::usage(e.to_string()))?;
    write_new(&private, private_pem.as_bytes(), 0o600, force)?;
    write_new(&public, signer.public_key_pem().as_bytes(), 0o644, force)?;
    say!(
        "private key: {}  (keep it secret; it issues licenses)",
        private.display()
    );
    say!(
        "public key:  {}  (compile into the service with include_str!)",
        public.display()
    );
    if let Some(kid) = kid {
        say!(
            "register it with PublicKey::from_pem(..)?.with_kid({kid:?}) and issue with --kid {kid}"
        );
    }
    Ok(())
}
