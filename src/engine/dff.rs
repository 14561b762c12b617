//! The target layer's activations read back after a forward pass: what Deep Feature
//! Factorization ([`crate::dff`]) factorises on the host.

use super::Engine;
use crate::error::{Error, Result};
use crate::gpu::record_all_profiled;
use crate::graph::Shape;

impl Engine {
    /// Runs the forward pass over `images` (any size; resized as for [`Engine::explain`]) and
    /// returns the first target layer's activations, f32 `[images, C, h, w]` (a folded
    /// layer as it is read: `[C, h, w]`), and that shape.
    pub fn layer_activations(&mut self, images: &[image::RgbImage]) -> Result<(Vec<f32>, Shape)> {
        if self.aug != 1 {
            return Err(Error::Invalid(
                "layer activations are read without --aug-smooth".into(),
            ));
        }
        super::check_sizes(images)?;
        self.check_rgb()?;
        let step = self.plan.targets[0];
        let shape = self.plan.steps[step].shape;
        let each = shape.iter().product::<usize>();
        let mut out = Vec::with_capacity(images.len() * each);
        for chunk in images.chunks(self.batch_size()) {
            let n = chunk.len();
            self.upload(chunk, None);
            if !self.forward_cache.contains_key(&(n, false)) {
                let f = self.forward(n, false);
                self.forward_cache.insert((n, false), f);
            }
            let mut encoder =
                self.ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("activations"),
                    });
            record_all_profiled(
                &mut encoder,
                "activations",
                &self.forward_cache[&(n, false)],
                self.profiler.as_mut(),
            );
            let mut readback = std::mem::take(&mut self.readback);
            let bytes = readback.submit_and_read(
                &self.ctx,
                encoder,
                &[(self.act(step), (n * each * 4) as u64)],
            );
            self.readback = readback;
            out.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes?[0]));
        }
        Ok((out, shape))
    }
}
