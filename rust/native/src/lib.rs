//! `endosec._native`: the data plane's Python face. Only the module lives here; each part
//! registers its own functions and classes.

use pyo3::prelude::*;

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
