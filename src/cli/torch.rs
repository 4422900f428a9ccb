//! Runs the repository's PyTorch references (`scripts/torch_reference.py`, embedded in the
//! binary) with `$STYLIZE_PYTHON` (default python3) and reads the JSON lines they print.

use std::process::Command;

/// The interpreter that runs the scripts.
pub fn python() -> String {
    std::env::var("STYLIZE_PYTHON").unwrap_or_else(|_| "python3".into())
}

const SCRIPT: &str = include_str!("../../scripts/torch_reference.py");

/// Runs the reference's `command` (`step` or `gatys`) with `args` on as many threads as
/// ours; one parsed value per line of its output, or why it could not run (PyTorch missing,
/// the script failing).
pub fn run_reference<T: serde::de::DeserializeOwned>(
    command: &str,
    args: &[String],
) -> Result<Vec<T>, String> {
    let python = python();
    let probe = Command::new(&python).args(["-c", "import torch"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "PyTorch is not importable by `{python}` (pip install torch, or set STYLIZE_PYTHON)"
        ));
    }
    let script = std::env::temp_dir().join(format!("stylize-torch-{}.py", std::process::id()));
    std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    let output = Command::new(&python)
        .arg(&script)
        .args(["--threads", &threads().to_string(), command])
        .args(args)
        .output();
    let _ = std::fs::remove_file(&script);
    let output = output.map_err(|e| format!("{python}: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line}")))
        .collect()
}

/// Threads PyTorch is given: as many as this machine's cores, like ours.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
