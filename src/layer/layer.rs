//! [`LicenseLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::service::License;
use crate::LicenseMonitor;
use crate::monitor::Shared;

/// A tower [`Layer`] that wraps services in [`License`].
///
/// Same as [`LicenseMonitor::layer`]. A layer, and every service it makes, keeps the
/// monitor's checker running: a router that holds only the layer stays enforced.
#[derive(Clone)]
#[must_use]
pub struct LicenseLayer {
    shared: Arc<Shared>,
}

impl LicenseLayer {
    /// A layer judging requests by `monitor`'s verdict.
    pub fn new(monitor: &LicenseMonitor) -> Self {
        Self {
            shared: Arc::clone(&monitor.shared),
        }
    }
}

impl<S> Layer<S> for LicenseLayer {
    type Service = License<S>;

    fn layer(&self, inner: S) -> License<S> {
        License::new(
            inner,
            &LicenseMonitor {
                shared: Arc::clone(&self.shared),
            },
        )
    }
}

impl fmt::Debug for LicenseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseLayer")
            .field("exempt_paths", &self.shared.exempt_paths)
            .finish()
    }
}
