//! A style's precompute for RegisterStyle, run by the scheduler like a job: refused while
//! the server drains, memory-planned and reserved beside the running jobs (waiting for
//! memory until the caller's deadline), counted in flight so a drain waits for it, and its
//! cache counters published. It has a lane of its own rather than a place in the queue
//! (the server bounds registrations separately), so a queue full of stills never delays a
//! registration.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use image::RgbImage;

use super::{Scheduler, Shared};
use crate::cache::Lookup;
use crate::error::Result;
use crate::render::plan::plan_precompute;
use crate::render::{RenderOptions, StyleSource, warm_style};
use crate::telemetry::metrics as names;

/// Counts a registration among the running jobs while it lives.
struct Running {
    shared: Arc<Shared>,
    flag: Arc<AtomicBool>,
}

impl Running {
    fn enter(shared: &Arc<Shared>) -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        shared.lock().start_running(flag.clone());
        Self {
            shared: shared.clone(),
            flag,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.lock().end_running(&self.flag);
        self.shared.changed.notify_all();
    }
}

impl Scheduler {
    /// Computes (or finds cached) `image`'s style targets at `options`' layers and scales,
    /// as RegisterStyle needs them before it hands out a key; one lookup per scale.
    pub fn precompute_style(
        &self,
        image: &RgbImage,
        options: &RenderOptions,
        deadline: Option<Instant>,
    ) -> Result<Vec<Lookup>> {
        self.accepting()?;
        let backends = &self.shared.backends;
        let plan = plan_precompute(
            image,
            options,
            &backends.engine.footprint(),
            self.job_capacity(),
        )?;
        let _memory = self.reserve(plan.estimate, deadline)?;
        let _running = Running::enter(&self.shared);
        let source = StyleSource {
            features: backends.features.as_ref(),
            cache: Some(self.shared.cache.as_ref()),
            tile_side: plan.tile_side,
        };
        let lookups = warm_style(image, options, source, backends.engine.convention());
        names::publish_cache(&self.shared.cache.stats());
        lookups
    }
}
