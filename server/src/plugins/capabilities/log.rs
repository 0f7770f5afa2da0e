//! Capability `log` (always granted): structured lines to the server log, kept per call for the harness.

use crate::plugins::bindings::v0_1::mdm::plugin::log as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::log as v0_2;
use crate::plugins::bindings::v0_3::mdm::plugin::log as v0_3;
use crate::plugins::host::{HostState, LogLine};
use wasmtime::component::{HasSelf, Linker};

/// Lines kept per call for the harness; the server log gets every line.
const MAX_KEPT: usize = 1000;
const MAX_MESSAGE: usize = 8 * 1024;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// A line's level, whichever WIT version sent it.
#[derive(Debug, Clone, Copy)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl HostState {
    fn log_line(&mut self, level: Level, mut message: String, fields: Vec<(String, String)>) {
        let _span = tracing::debug_span!("plugin.host", call = "log").entered();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.call.plugin_id;
        let (hook, event) = (self.call.hook, self.call.event_id.as_str());
        let f = format!("{fields:?}");
        match level {
            Level::Trace => tracing::trace!(plugin, hook, event, fields = %f, "{message}"),
            Level::Debug => tracing::debug!(plugin, hook, event, fields = %f, "{message}"),
            Level::Info => tracing::info!(plugin, hook, event, fields = %f, "{message}"),
            Level::Warn => tracing::warn!(plugin, hook, event, fields = %f, "{message}"),
            Level::Error => tracing::error!(plugin, hook, event, fields = %f, "{message}"),
        }
        if self.logs.len() < MAX_KEPT {
            self.logs.push(LogLine {
                level: format!("{level:?}").to_lowercase(),
                message,
                fields,
            });
        }
    }
}

/// The host imports of each served WIT version: the interface is the same in each.
macro_rules! host_imports {
    ($($v:ident),+) => {$(
        impl $v::Host for HostState {
            async fn log(
                &mut self,
                level: $v::Level,
                message: String,
                fields: Vec<(String, String)>,
            ) -> wasmtime::Result<()> {
                let level = match level {
                    $v::Level::Trace => Level::Trace,
                    $v::Level::Debug => Level::Debug,
                    $v::Level::Info => Level::Info,
                    $v::Level::Warn => Level::Warn,
                    $v::Level::Error => Level::Error,
                };
                self.log_line(level, message, fields);
                Ok(())
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);
