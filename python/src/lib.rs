//! `gradcam_wgpu._native`: the engine's Python bindings. `Model` loads, `Explainer` runs one
//! engine configuration; `gradcam_wgpu` (Python) re-exports them and adds the
//! pytorch-grad-cam drop-in on top.

use gradcam_wgpu::engine::{Fold, Fuse, Method};
use gradcam_wgpu::onnx::{Layout, OnnxOptions};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, ImageResult, Model, Precision, TargetSpec};
use numpy::ndarray::{Array2, Array4, Array5};
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

create_exception!(
    _native,
    Error,
    PyException,
    "An engine error (model, GPU, file)."
);
create_exception!(
    _native,
    ModelError,
    Error,
    "The model file cannot be loaded or run."
);
create_exception!(_native, GpuError, Error, "The GPU (or its driver) failed.");

/// The engine's errors as Python exceptions: bad input is a `ValueError`.
fn to_py(e: gradcam_wgpu::Error) -> PyErr {
    use gradcam_wgpu::Error as E;
    let msg = e.to_string();
    match e {
        E::Invalid(_) | E::UnknownLayer { .. } => PyValueError::new_err(msg),
        E::File { .. } | E::Model(_) | E::Tensor { .. } | E::Io(_) => ModelError::new_err(msg),
        _ => GpuError::new_err(msg),
    }
}

/// Runs `f` with the GIL released; a panic becomes an `Error` instead of crossing over.
fn guarded<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> gradcam_wgpu::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        .map_err(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Error::new_err(format!("internal engine error (please report): {what}"))
        })?
        .map_err(to_py)
}

/// One device per process, opened on first use.
fn context(py: Python<'_>) -> PyResult<GpuContext> {
    static CTX: Mutex<Option<GpuContext>> = Mutex::new(None);
    let mut slot = CTX.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let ctx = guarded(py, GpuContext::new)?;
    *slot = Some(ctx.clone());
    Ok(ctx)
}

/// A loaded model: graph, weights and preprocessing.
#[pyclass(module = "gradcam_wgpu", name = "Model", frozen)]
struct PyModel {
    inner: Arc<Model>,
}

#[pymethods]
impl PyModel {
    /// Loads a self-describing safetensors file, a torchvision state dict (`arch` when the
    /// tensor names don't tell it) or an ONNX model (`size` for dynamic inputs, `layout`
    /// "nchw" or "nhwc" to override the one read from its shape).
    #[staticmethod]
    #[pyo3(signature = (path, arch=None, size=None, layout=None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        arch: Option<String>,
        size: Option<(usize, usize)>,
        layout: Option<String>,
    ) -> PyResult<Self> {
        let layout = match layout.as_deref() {
            None => None,
            Some("nchw") => Some(Layout::Nchw),
            Some("nhwc") => Some(Layout::Nhwc),
            Some(o) => {
                return Err(PyValueError::new_err(format!(
                    "layout `{o}`: expected nchw or nhwc"
                )));
            }
        };
        let opts = OnnxOptions {
            size: size.map(|(h, w)| [h, w]),
            layout,
        };
        let m = guarded(py, || Model::load_with(&path, arch.as_deref(), &opts))?;
        Ok(Self { inner: Arc::new(m) })
    }

    /// The model built into the library (the CLI's default).
    #[staticmethod]
    fn bundled(py: Python<'_>) -> PyResult<Self> {
        let m = guarded(py, Model::bundled)?;
        Ok(Self { inner: Arc::new(m) })
    }

    #[getter]
    fn arch(&self) -> String {
        self.inner.arch.clone()
    }
    /// `(H, W)` the model takes by default.
    #[getter]
    fn input_size(&self) -> (usize, usize) {
        (self.inner.input_size[0], self.inner.input_size[1])
    }
    #[getter]
    fn input_channels(&self) -> usize {
        self.inner
            .graph
            .shapes(self.inner.input_size)
            .map_or(3, |s| s[0][0])
    }
    #[getter]
    fn mean(&self) -> [f32; 3] {
        self.inner.mean
    }
    #[getter]
    fn std(&self) -> [f32; 3] {
        self.inner.std
    }
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.classes.clone()
    }
    #[getter]
    fn default_layer(&self) -> String {
        self.inner.default_layer.clone()
    }
    /// Every name `layers=` accepts (node names and module-path aliases).
    #[getter]
    fn layers(&self) -> Vec<String> {
        self.inner.graph.layer_names()
    }
    /// The per-image output shape `(d0, d1, d2)` of layer `name` at input `size` (default
    /// the model's): the framework's shape less the batch, padded with 1s, in the same
    /// row-major order (what `folds=` indexes).
    #[pyo3(signature = (name, size=None))]
    fn layer_shape(
        &self,
        py: Python<'_>,
        name: &str,
        size: Option<(usize, usize)>,
    ) -> PyResult<(usize, usize, usize)> {
        let size = size.map_or(self.inner.input_size, |(h, w)| [h, w]);
        let m = self.inner.clone();
        let [a, b, c] = guarded(py, move || m.layer_shape(name, size))?;
        Ok((a, b, c))
    }
    fn __repr__(&self) -> String {
        format!(
            "Model(arch={:?}, input_size={:?}, default_layer={:?})",
            self.inner.arch, self.inner.input_size, self.inner.default_layer
        )
    }
}

/// `targets=`: "top1", "top3", "all", "3,7", an int or a list of ints.
fn parse_targets(t: &Bound<'_, PyAny>) -> PyResult<TargetSpec> {
    if let Ok(s) = t.extract::<String>() {
        return s.parse().map_err(to_py);
    }
    if let Ok(c) = t.extract::<usize>() {
        return Ok(TargetSpec::Classes(vec![c]));
    }
    if let Ok(c) = t.extract::<Vec<usize>>()
        && !c.is_empty()
    {
        return Ok(TargetSpec::Classes(c));
    }
    Err(PyValueError::new_err(
        "targets: expected \"top1\", \"topK\", \"all\", \"3,7\", a class index or a list of them",
    ))
}

/// `folds=`: per layer None, or `(shape, index)`: the folded `(C, h, w)` and a uint32 array
/// of C*h*w flat indices into the layer's per-image output.
fn parse_folds(f: &Bound<'_, PyAny>) -> PyResult<Vec<Option<Fold>>> {
    let bad = || {
        PyValueError::new_err(
            "folds: expected a list with, per layer, None or ((C, h, w), uint32 index array)",
        )
    };
    let mut out = Vec::new();
    for item in f.try_iter().map_err(|_| bad())? {
        let item = item?;
        if item.is_none() {
            out.push(None);
            continue;
        }
        let ((c, h, w), index): ((usize, usize, usize), PyReadonlyArrayDyn<'_, u32>) =
            item.extract().map_err(|_| bad())?;
        out.push(Some(Fold {
            shape: [c, h, w],
            index: index.as_array().iter().copied().collect(),
        }));
    }
    Ok(out)
}

/// The results of one call, as numpy arrays.
#[pyclass(module = "gradcam_wgpu", name = "Result", frozen)]
struct PyResultSet {
    /// float32 `[N, T, H, W]` in [0, 1].
    #[pyo3(get)]
    maps: Py<PyAny>,
    /// int64 `[N, T]`: the explained class of each map.
    #[pyo3(get)]
    classes: Py<PyAny>,
    /// float32 `[N, K]` pre-softmax logits.
    #[pyo3(get)]
    logits: Py<PyAny>,
    /// uint8 `[N, T, H, W, 3]` JET overlays, or None unless asked for.
    #[pyo3(get)]
    overlays: Py<PyAny>,
}

#[pymethods]
impl PyResultSet {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shape = self.maps.bind(py).getattr("shape")?.repr()?.to_string();
        Ok(format!("Result(maps={shape})"))
    }
}

/// An engine configuration: model, layers, method and targets; holds its GPU buffers
/// until it is dropped or `close()`d.
#[pyclass(module = "gradcam_wgpu", name = "Explainer")]
struct PyExplainer {
    model: Arc<Model>,
    cfg: EngineConfig,
    overlays: bool,
    /// Engines by targets: the configured ones, and `PerImage(k)` for `classes=` calls.
    engines: HashMap<Option<usize>, Engine>,
}

#[pymethods]
impl PyExplainer {
    #[new]
    #[pyo3(signature = (model, layers=None, method="gradcam", targets=None, *, score="logit", size=None,
        batch=8, fuse="mean", eigen_smooth=false, aug_smooth=false, mean=None, std=None,
        precision="f32", winograd=false, overlays=false, backward_rows=None, probe_batch=None,
        max_channels=None, kpca_gamma=None, lazy=false, folds=None, reshape="auto", samples=None,
        noise=None, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &PyModel,
        layers: Option<Bound<'_, PyAny>>,
        method: &str,
        targets: Option<Bound<'_, PyAny>>,
        score: &str,
        size: Option<(usize, usize)>,
        batch: usize,
        fuse: &str,
        eigen_smooth: bool,
        aug_smooth: bool,
        mean: Option<[f32; 3]>,
        std: Option<[f32; 3]>,
        precision: &str,
        winograd: bool,
        overlays: bool,
        backward_rows: Option<usize>,
        probe_batch: Option<usize>,
        max_channels: Option<usize>,
        kpca_gamma: Option<f32>,
        lazy: bool,
        folds: Option<Bound<'_, PyAny>>,
        reshape: &str,
        samples: Option<usize>,
        noise: Option<f32>,
        seed: u64,
    ) -> PyResult<Self> {
        let m = &model.inner;
        let layers: Vec<String> = match layers {
            None => Vec::new(),
            Some(l) => match l.extract::<String>() {
                Ok(one) => vec![one],
                Err(_) => l.extract()?,
            },
        };
        let precision = match precision {
            "f32" => Precision::F32,
            "f16" => Precision::F16,
            o => {
                return Err(PyValueError::new_err(format!(
                    "precision `{o}`: expected f32 or f16"
                )));
            }
        };
        let cfg = EngineConfig {
            layers,
            method: method.parse::<Method>().map_err(to_py)?,
            fuse: fuse.parse::<Fuse>().map_err(to_py)?,
            eigen_smooth,
            aug_smooth,
            size: size.map_or(m.input_size, |(h, w)| [h, w]),
            batch,
            targets: match targets {
                None => TargetSpec::TopK(1),
                Some(t) => parse_targets(&t)?,
            },
            score: score.parse().map_err(to_py)?,
            mean: mean.unwrap_or(m.mean),
            std: std.unwrap_or(m.std),
            read_maps: true,
            backward_rows,
            probe_batch,
            max_channels,
            kpca_gamma,
            samples,
            noise_std: noise,
            seed,
            noise: None,
            precision,
            winograd,
            folds: folds
                .as_ref()
                .map(parse_folds)
                .transpose()?
                .unwrap_or_default(),
            reshape: reshape.parse().map_err(to_py)?,
            ..Default::default()
        };
        let mut ex = Self {
            model: m.clone(),
            cfg,
            overlays,
            engines: HashMap::new(),
        };
        // Build now so that a bad layer or method fails here, not on the first call; `lazy`
        // skips it for callers that only use `classes=` (that engine is built on first use).
        if !lazy {
            ex.engine(py, None)?;
        }
        Ok(ex)
    }

    /// Explains `images`: uint8 `[N, H, W, 3]` RGB (any size; resized to the model's) or
    /// float32 `[N, C, H, W]` already normalised at the model's size. `classes`: per image,
    /// an int or a list of ints (the same count for all), instead of the configured targets.
    #[pyo3(signature = (images, classes=None))]
    fn __call__(
        &mut self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        classes: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyResultSet> {
        let classes: Option<Vec<Vec<usize>>> = match classes {
            None => None,
            Some(c) => Some(match c.extract::<Vec<Vec<usize>>>() {
                Ok(v) => v,
                Err(_) => c
                    .extract::<Vec<usize>>()
                    .map_err(|_| {
                        PyValueError::new_err(
                            "classes: expected one class index per image, or a list per image",
                        )
                    })?
                    .into_iter()
                    .map(|c| vec![c])
                    .collect(),
            }),
        };
        let per_image = classes.as_ref().map(|c| c.first().map_or(1, |c| c.len()));
        let size = self.cfg.size;
        let overlays = self.overlays;
        if let Ok(a) = images.extract::<PyReadonlyArrayDyn<'_, f32>>() {
            let shape = a.shape().to_vec();
            let want = [size[0], size[1]];
            if shape.len() != 4 || shape[2..] != want {
                return Err(PyValueError::new_err(format!(
                    "float32 images must be [N, C, {}, {}] (already normalised), got {shape:?}",
                    want[0], want[1]
                )));
            }
            // `as_slice` also accepts Fortran order: only C order is used in place.
            let owned;
            let x: &[f32] = match a.as_slice() {
                Ok(s) if a.is_c_contiguous() => s,
                _ => {
                    owned = a.as_array().iter().copied().collect::<Vec<f32>>();
                    &owned
                }
            };
            let n = shape[0];
            let engine = self.engine(py, per_image)?;
            if shape[1] != engine.input_channels() {
                return Err(PyValueError::new_err(format!(
                    "the model takes {} channels, the input has {}",
                    engine.input_channels(),
                    shape[1]
                )));
            }
            let cl = classes.as_deref();
            let r = guarded(py, || engine.explain_tensor(x, n, cl))?;
            return collect(py, r, size, overlays);
        }
        let a = images.extract::<PyReadonlyArrayDyn<'_, u8>>().map_err(|_| {
            PyValueError::new_err(
                "images: expected a numpy array, uint8 [N, H, W, 3] RGB or float32 [N, C, H, W]",
            )
        })?;
        let shape = a.shape().to_vec();
        if shape.len() != 4 || shape[3] != 3 {
            return Err(PyValueError::new_err(format!(
                "uint8 images must be [N, H, W, 3] RGB, got {shape:?}"
            )));
        }
        let (h, w) = (shape[1], shape[2]);
        let pixels: Vec<u8> = match a.as_slice() {
            Ok(s) if a.is_c_contiguous() => s.to_vec(),
            _ => a.as_array().iter().copied().collect(),
        };
        let imgs: Vec<image::RgbImage> = pixels
            .chunks_exact(h * w * 3)
            .map(|p| image::RgbImage::from_raw(w as u32, h as u32, p.to_vec()))
            .collect::<Option<_>>()
            .ok_or_else(|| PyValueError::new_err("images too large"))?;
        let engine = self.engine(py, per_image)?;
        let r = guarded(py, || match &classes {
            Some(c) => engine.explain_for(&imgs, c),
            None => engine.explain(&imgs),
        })?;
        collect(py, r, size, overlays)
    }

    /// Releases the engines' GPU buffers; the explainer rebuilds them if called again.
    fn close(&mut self) {
        self.engines.clear();
    }

    /// Images per GPU batch.
    #[getter]
    fn batch_size(&mut self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.engine(py, None)?.batch_size())
    }
    /// The target layers, as given or defaulted.
    #[getter]
    fn layers(&mut self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self.engine(py, None)?.layers().to_vec())
    }
    #[getter]
    fn input_size(&self) -> (usize, usize) {
        (self.cfg.size[0], self.cfg.size[1])
    }
}

impl PyExplainer {
    fn engine(&mut self, py: Python<'_>, per_image: Option<usize>) -> PyResult<&mut Engine> {
        if !self.engines.contains_key(&per_image) {
            let ctx = context(py)?;
            let mut cfg = self.cfg.clone();
            if let Some(k) = per_image {
                cfg.targets = TargetSpec::PerImage(k);
            }
            let model = self.model.clone();
            let e = guarded(py, move || Engine::new(ctx, &model, cfg))?;
            self.engines.insert(per_image, e);
        }
        Ok(self.engines.get_mut(&per_image).expect("inserted above"))
    }
}

/// Stacks per-image results into numpy arrays.
fn collect(
    py: Python<'_>,
    results: Vec<ImageResult>,
    [h, w]: [usize; 2],
    overlays: bool,
) -> PyResult<PyResultSet> {
    let n = results.len();
    let t = results.first().map_or(0, |r| r.targets.len());
    let k = results.first().map_or(0, |r| r.logits.len());
    let mut maps = Vec::with_capacity(n * t * h * w);
    let mut classes = Vec::with_capacity(n * t);
    let mut logits = Vec::with_capacity(n * k);
    let mut over = Vec::with_capacity(if overlays { n * t * h * w * 3 } else { 0 });
    for r in results {
        logits.extend_from_slice(&r.logits);
        for tr in r.targets {
            classes.push(tr.class as i64);
            maps.extend(tr.map.unwrap_or_else(|| vec![0.0; h * w]));
            if overlays {
                over.extend_from_slice(tr.overlay.as_raw());
            }
        }
    }
    let shape_err = |e: numpy::ndarray::ShapeError| Error::new_err(e.to_string());
    let maps = Array4::from_shape_vec((n, t, h, w), maps).map_err(shape_err)?;
    let classes = Array2::from_shape_vec((n, t), classes).map_err(shape_err)?;
    let logits = Array2::from_shape_vec((n, k), logits).map_err(shape_err)?;
    let overlays = if overlays {
        Array5::from_shape_vec((n, t, h, w, 3), over)
            .map_err(shape_err)?
            .into_pyarray(py)
            .into_any()
            .unbind()
    } else {
        py.None()
    };
    Ok(PyResultSet {
        maps: maps.into_pyarray(py).into_any().unbind(),
        classes: classes.into_pyarray(py).into_any().unbind(),
        logits: logits.into_pyarray(py).into_any().unbind(),
        overlays,
    })
}

/// Test support: a `tests/fixtures/methods` fixture's model, built as the Rust tests build
/// it: detweights of `spec` (JSON `[[name, shape], ...]`) and `seed`, then `overrides`.
#[pyfunction]
fn _fixture_model(
    py: Python<'_>,
    arch: String,
    spec: String,
    seed: u64,
    overrides: HashMap<String, PyReadonlyArrayDyn<'_, f32>>,
) -> PyResult<PyModel> {
    use gradcam_wgpu::model::{Tensor, detweights};
    let spec: Vec<(String, Vec<usize>)> =
        serde_json::from_str(&spec).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut weights = detweights::generate(&spec, seed);
    for (name, a) in overrides {
        let t = Tensor {
            shape: a.shape().to_vec(),
            data: a.as_array().iter().copied().collect(),
        };
        weights.tensors.insert(name, t);
    }
    let m = guarded(py, move || Model::from_weights(weights, Some(&arch)))?;
    Ok(PyModel { inner: Arc::new(m) })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PyExplainer>()?;
    m.add_class::<PyResultSet>()?;
    m.add_function(wrap_pyfunction!(_fixture_model, m)?)?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("GpuError", m.py().get_type::<GpuError>())?;
    m.add(
        "METHODS",
        gradcam_wgpu::engine::METHODS
            .iter()
            .map(|(_, name, _)| *name)
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}
