//! `endosec._native`: the data plane's Python face. Only the module lives here; each part
//! registers its own functions and classes.

use pyo3::prelude::*;

/// The request path allocates and frees per request on its own threads; mimalloc's thread-local
/// heaps make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod canon;
mod dataplane;
mod dns;
mod http;
mod immune;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    canon::register(m)?;
    dataplane::register(m)?;
    dns::register(m)?;
    http::register(m)?;
    immune::register(m)?;
    Ok(())
}
