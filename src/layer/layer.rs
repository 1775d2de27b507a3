//! [`LicenseLayer`].

use std::fmt;

use tower_layer::Layer;

use super::service::License;
use crate::LicenseMonitor;
use crate::shared::View;

/// A tower [`Layer`] that wraps services in [`License`].
///
/// Same as [`LicenseMonitor::layer`]. A layer, and every service it makes, keeps the
/// monitor's checker running: a router that holds only the layer stays enforced.
#[derive(Clone)]
#[must_use]
pub struct LicenseLayer {
    view: View,
}

impl LicenseLayer {
    /// A layer judging requests by `monitor`'s verdict (same as [`LicenseMonitor::layer`]).
    pub fn new(monitor: &LicenseMonitor) -> Self {
        Self {
            view: monitor.view(),
        }
    }
}

impl<S> Layer<S> for LicenseLayer {
    type Service = License<S>;

    fn layer(&self, inner: S) -> License<S> {
        License::from_view(inner, self.view.clone())
    }
}

impl fmt::Debug for LicenseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseLayer")
            .field("exempt_paths", &self.view.exempt_paths())
            .finish()
    }
}

impl LicenseMonitor {
    /// A tower layer enforcing this monitor's verdict: same as [`LicenseLayer::new`].
    pub fn layer(&self) -> LicenseLayer {
        LicenseLayer::new(self)
    }
}
