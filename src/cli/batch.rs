//! Decode and batch: the walked items cut into batches of the engine's current size and
//! decoded on the rayon pool, and the types that carry an image through the later stages.

use super::walk::Item;
use gradcam_wgpu::ImageResult;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;

/// An image on its way to the engine: decoded, or why it could not be.
pub struct Job {
    pub item: Item,
    pub image: Result<image::RgbImage, String>,
}

/// What the engine hands the writer per image.
pub enum Done {
    Explained(ImageResult),
    Failed(String),
}

/// Cuts `items` into batches of `batch` images (read before each cut, so a halved engine
/// gets smaller ones), decodes each and sends it; stops when the receiver hangs up.
pub fn produce(
    items: impl Iterator<Item = Item>,
    batch: &AtomicUsize,
    host_size: Option<[usize; 2]>,
    tx: &SyncSender<Vec<Job>>,
) {
    let mut chunk = Vec::new();
    for item in items {
        chunk.push(item);
        if chunk.len() >= batch.load(Ordering::Relaxed)
            && tx
                .send(decode(std::mem::take(&mut chunk), host_size))
                .is_err()
        {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(decode(chunk, host_size));
    }
}

/// Decodes a batch in parallel: resized to `host_size` on the way, or as stored when the
/// engine resizes on the device (`None`). Items the walk could not read stay failures.
pub fn decode(items: Vec<Item>, host_size: Option<[usize; 2]>) -> Vec<Job> {
    items
        .into_par_iter()
        .map(|item| {
            let image = match &item.error {
                Some(e) => Err(e.clone()),
                None => match host_size {
                    Some(size) => gradcam_wgpu::input::load(&item.path, size),
                    None => gradcam_wgpu::input::open(&item.path),
                },
            };
            Job { item, image }
        })
        .collect()
}
