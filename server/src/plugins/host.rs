//! Per-call host state: the sandbox (WASI with nothing to reach), memory limits, the call's context and
//! grants, and the backend that capabilities read and write through.

use super::capabilities::HostBackend;
use super::engine;
use super::manifest::{Capability, Manifest};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// stdout/stderr a plugin may write per call before the rest is dropped.
const STDIO_CAP: usize = 64 * 1024;

/// What one hook call is about.
#[derive(Clone)]
pub struct CallContext {
    pub plugin_id: Arc<str>,
    pub hook: &'static str,
    pub event_id: String,
    pub manifest: Arc<Manifest>,
    pub config: Arc<str>,
}

/// A line a plugin logged, kept for the test harness (and sent to tracing).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) call: CallContext,
    pub(crate) backend: Arc<dyn HostBackend>,
    pub(crate) logs: Vec<LogLine>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl HostState {
    pub fn new(call: CallContext, backend: Arc<dyn HostBackend>) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAP);
        let stderr = MemoryOutputPipe::new(STDIO_CAP);
        // No preopened directories, no environment, no arguments, no sockets: the plugin reaches the world
        // only through the capabilities it was granted.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(call.manifest.limits.memory_mib as usize * 1024 * 1024)
            .table_elements(100_000)
            .instances(engine::MAX_CORE_INSTANCES as usize)
            .tables(engine::MAX_TABLES as usize)
            .memories(engine::MAX_MEMORIES as usize)
            .trap_on_grow_failure(true)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits,
            call,
            backend,
            logs: Vec::new(),
            stdout,
            stderr,
        }
    }

    /// A trap for a capability used without its grant (the upload check should already have refused it).
    pub(crate) fn require(&self, c: Capability) -> wasmtime::Result<()> {
        if self.call.manifest.has(c) {
            Ok(())
        } else {
            Err(wasmtime::Error::msg(format!(
                "plugin {} used capability {} without a grant",
                self.call.plugin_id,
                c.as_str()
            )))
        }
    }

    /// What the plugin printed, for the server log.
    pub(crate) fn stdio(&self) -> (String, String) {
        let s = |p: &MemoryOutputPipe| String::from_utf8_lossy(&p.contents()).into_owned();
        (s(&self.stdout), s(&self.stderr))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
