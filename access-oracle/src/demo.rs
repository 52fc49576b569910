//! `access-oracle demo` (being written).
/// Runs the demo.
pub async fn run(
    _lib: Option<std::path::PathBuf>,
    _keep: bool,
) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
