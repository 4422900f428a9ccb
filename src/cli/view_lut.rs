//! `--view-lut FORWARD,INVERSE` and `--lut-interpolation`: a studio's view baked as two
//! `.cube` LUTs (docs/colour.md), loaded here for `stylize run` or sent on the wire for
//! `stylize submit`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use stylize::colour::{Interpolation, LutPair, View, view::LUT_ROUND_TRIP_TOLERANCE};
use stylize::server::proto;

use super::args::read_flag_file;
use super::exit::Usage;

#[derive(Args, Clone)]
pub struct ViewLutArgs {
    /// A studio's view baked as two `.cube` LUTs, `FORWARD,INVERSE` (docs/colour.md, as
    /// `ociobakelut` bakes them): OpenEXR content is shown to the optimiser through the
    /// forward LUT, and an OpenEXR output returns through the inverse. Overrides --view.
    #[arg(long, value_delimiter = ',')]
    view_lut: Vec<PathBuf>,
    /// How --view-lut's lattices are sampled.
    #[arg(long, default_value = "tetrahedral", value_parser = ["tetrahedral", "trilinear"])]
    lut_interpolation: String,
}

impl ViewLutArgs {
    /// The two files and the interpolation, when a view is given, for OpenEXR `content`
    /// only (a view turns scene-linear light into a picture).
    fn given(&self, content: &[u8]) -> Result<Option<([&Path; 2], Interpolation)>> {
        let files = match &self.view_lut[..] {
            [] => return Ok(None),
            [forward, inverse] => [forward.as_path(), inverse.as_path()],
            _ => return Err(Usage("--view-lut: give two files, FORWARD,INVERSE".into()).into()),
        };
        if !stylize::exr_file::is_exr(content) {
            return Err(Usage(
                "--view-lut: a view turns scene-linear light into a picture; the content is \
                 not OpenEXR"
                    .into(),
            )
            .into());
        }
        let interpolation = self
            .lut_interpolation
            .parse()
            .map_err(|e: String| Usage(format!("--lut-interpolation: {e}")))?;
        Ok(Some((files, interpolation)))
    }

    /// The view, loaded and checked here, its round trip said on stderr.
    pub fn load(&self, content: &[u8]) -> Result<Option<View>> {
        let Some(([forward, inverse], interpolation)) = self.given(content)? else {
            return Ok(None);
        };
        let pair =
            LutPair::load("view-lut", forward, inverse, interpolation).context("--view-lut")?;
        eprintln!(
            "--view-lut: the pair round-trips within {:.2}% (tolerance {:.0}%)",
            100.0 * pair.round_trip,
            100.0 * LUT_ROUND_TRIP_TOLERANCE
        );
        Ok(Some(View::Lut(std::sync::Arc::new(pair))))
    }

    /// The view as a request sends it (the server parses and checks it).
    pub fn wire(&self, content: &[u8]) -> Result<Option<proto::ViewLut>> {
        let Some(([forward, inverse], _)) = self.given(content)? else {
            return Ok(None);
        };
        Ok(Some(proto::ViewLut {
            forward: read_flag_file("view-lut", forward)?,
            inverse: read_flag_file("view-lut", inverse)?,
            interpolation: self.lut_interpolation.clone(),
        }))
    }
}
