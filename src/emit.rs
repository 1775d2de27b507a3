//! Emitting events: each one logged, counted, handed to the OpenTelemetry hook and sent
//! to the subscribers. The event types (`crate::event`) know nothing of where they go.

use crate::event::LicenseEvent;

/// A function every event is handed to (the OpenTelemetry exporter's).
#[cfg(feature = "otel")]
pub(crate) type EventHook = std::sync::Arc<dyn Fn(&LicenseEvent) + Send + Sync>;

/// Where every event goes: the log, the counters, the OpenTelemetry hook and the
/// subscribers. Shared by the checker and the instance-slot task.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) stats: std::sync::Arc<crate::stats::Stats>,
    pub(crate) events: tokio::sync::broadcast::Sender<LicenseEvent>,
    #[cfg(feature = "otel")]
    pub(crate) hook: Option<EventHook>,
}

impl Reporter {
    pub(crate) fn emit(&self, event: LicenseEvent) {
        event.log();
        self.stats.record_event(&event);
        #[cfg(feature = "otel")]
        if let Some(hook) = &self.hook {
            hook(&event);
        }
        // No receiver, or receivers lagging behind, never block or fail the sender.
        let _ = self.events.send(event);
    }
}
