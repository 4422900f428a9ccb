//! A stage's whole map assembled from its tiles' cores. On the CPU each core's rows are
//! copied once, straight into the map's buffer; on other devices the cores are copied out
//! and concatenated (rows of tiles, then the rows).

use candle_core::{DType, Device, Storage, Tensor, WithDType};

use crate::error::{Error, Result};
use crate::net::tiling::{TilePlan, Window, crop};

enum Pieces {
    Empty,
    HostF32(Vec<f32>),
    HostF64(Vec<f64>),
    /// Rows of tiles, each core copied out.
    Rows(Vec<Vec<Tensor>>),
}

pub struct Mosaic {
    height: usize,
    width: usize,
    channels: usize,
    columns: usize,
    pieces: Pieces,
}

impl Mosaic {
    /// A `height` x `width` map assembled from the cores of `plan`'s tiles (which come row
    /// by row).
    pub fn new(plan: &TilePlan, height: usize, width: usize) -> Self {
        let columns = plan
            .tiles
            .iter()
            .take_while(|t| t.core_rows == plan.tiles[0].core_rows)
            .count()
            .max(1);
        Self {
            height,
            width,
            channels: 0,
            columns,
            pieces: Pieces::Empty,
        }
    }

    /// Adds tile `index`'s core: `core` of its map (1 x C x h x w), which lands at `at`
    /// (row, column) of the whole map.
    pub fn push(
        &mut self,
        index: usize,
        map: &Tensor,
        core: Window,
        at: (usize, usize),
    ) -> Result<()> {
        if matches!(self.pieces, Pieces::Empty) {
            let (_, channels, _, _) = map.dims4()?;
            let len = channels * self.height * self.width;
            self.channels = channels;
            self.pieces = match (map.device(), map.dtype()) {
                (Device::Cpu, DType::F32) => Pieces::HostF32(vec![0.0; len]),
                (Device::Cpu, DType::F64) => Pieces::HostF64(vec![0.0; len]),
                _ => Pieces::Rows(Vec::new()),
            };
        }
        let shape = (self.channels, self.height, self.width);
        match &mut self.pieces {
            Pieces::HostF32(data) => copy_core(data, shape, map, core, at),
            Pieces::HostF64(data) => copy_core(data, shape, map, core, at),
            Pieces::Rows(rows) => {
                if index.is_multiple_of(self.columns) {
                    rows.push(Vec::new());
                }
                if let Some(row) = rows.last_mut() {
                    row.push(crop(map, core)?.copy()?);
                }
                Ok(())
            }
            Pieces::Empty => Ok(()),
        }
    }

    /// The whole map (1 x C x height x width).
    pub fn finish(self) -> Result<Tensor> {
        let shape = (1, self.channels, self.height, self.width);
        Ok(match self.pieces {
            Pieces::HostF32(data) => Tensor::from_vec(data, shape, &Device::Cpu)?,
            Pieces::HostF64(data) => Tensor::from_vec(data, shape, &Device::Cpu)?,
            Pieces::Rows(rows) => {
                let rows = rows
                    .iter()
                    .map(|row| Tensor::cat(row, 3))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Tensor::cat(&rows, 2)?
            }
            Pieces::Empty => return Err(Error::invalid("tiles", "no tile to assemble")),
        })
    }
}

/// Copies `core` of the host tensor `map` into `data` (C x H x W, `shape`) at `at`.
fn copy_core<T: WithDType>(
    data: &mut [T],
    (channels, height, width): (usize, usize, usize),
    map: &Tensor,
    core: Window,
    (top, left): (usize, usize),
) -> Result<()> {
    let map = map.contiguous()?;
    let (_, c, h, w) = map.dims4()?;
    if c != channels || top + core.height > height || left + core.width > width {
        return Err(Error::invalid("tiles", "a core lies outside its map"));
    }
    let (storage, layout) = map.storage_and_layout();
    let Storage::Cpu(host) = &*storage else {
        return Err(Error::invalid("tiles", "a host map is not on the host"));
    };
    let source = &host.as_slice::<T>()?[layout.start_offset()..];
    for channel in 0..c {
        for row in 0..core.height {
            let from = (channel * h + core.top + row) * w + core.left;
            let to = (channel * height + top + row) * width + left;
            data[to..to + core.width].copy_from_slice(&source[from..from + core.width]);
        }
    }
    Ok(())
}
