//! Constant tensors: initializers and `Constant` nodes decoded from their protobuf form
//! (typed fields or `raw_data`, inline or in an external file), and the values the shape
//! subgraphs fold to.

use crate::error::{Error, Result};
use onnx_protobuf::TensorProto;
use onnx_protobuf::tensor_proto::DataType;
use protobuf::Enum;

/// A constant's elements: floats for weights, integers for shapes and indices.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
}

/// A constant tensor (no batch dimension: constants are the same for every image).
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub fn floats(dims: Vec<usize>, v: Vec<f32>) -> Self {
        Self {
            dims,
            data: Data::F(v),
        }
    }

    pub fn ints(dims: Vec<usize>, v: Vec<i64>) -> Self {
        Self {
            dims,
            data: Data::I(v),
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }

    /// The elements as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The elements as i64 (floats truncated, as ONNX's Cast does).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::F(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I(v) => v.clone(),
        }
    }

    /// The single element of a scalar or one-element tensor.
    pub fn scalar(&self) -> Option<f32> {
        (self.len() == 1).then(|| self.to_f32()[0])
    }
}

/// Largest constant this importer decodes (elements): far beyond any real weight, small
/// enough that a corrupt size cannot exhaust memory before the read fails.
const MAX_CONST: usize = 1 << 31;

/// Decodes `t`; `external` reads the bytes of an external-data file named in the model.
pub fn decode(t: &TensorProto, external: &mut dyn FnMut(&str) -> Result<Vec<u8>>) -> Result<Const> {
    let bad = |m: String| Error::Tensor {
        name: t.name.clone(),
        message: m,
    };
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_CONST)
            .ok_or_else(|| bad(format!("shape {:?} is too large", t.dims)))?;
        dims.push(d);
    }
    let dtype = DataType::from_i32(t.data_type)
        .ok_or_else(|| bad(format!("unknown data type {}", t.data_type)))?;
    let external_bytes;
    let raw: Option<&[u8]> = if !t.external_data.is_empty() {
        external_bytes = read_external(t, external)?;
        Some(&external_bytes)
    } else if !t.raw_data.is_empty() {
        Some(&t.raw_data)
    } else {
        None
    };
    let data = match raw {
        Some(raw) => from_raw(dtype, raw, count).map_err(bad)?,
        None => from_fields(t, dtype).map_err(bad)?,
    };
    let c = Const { dims, data };
    if c.len() != count {
        return Err(bad(format!(
            "holds {} elements for shape {:?}",
            c.len(),
            t.dims
        )));
    }
    Ok(c)
}

/// The bytes of an external tensor: `location` relative to the model, `offset` and `length`.
fn read_external(
    t: &TensorProto,
    external: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let field = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let bad = |m: String| Error::Tensor {
        name: t.name.clone(),
        message: m,
    };
    let location = field("location").ok_or_else(|| bad("external data has no location".into()))?;
    let num = |k: &str| -> Result<Option<usize>> {
        field(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("external data {k} `{v}` is not a number")))
            })
            .transpose()
    };
    let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
    let bytes = external(location).map_err(|e| {
        bad(format!(
            "external data file `{location}` cannot be read: {e}"
        ))
    })?;
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(bytes.len()),
    };
    match end {
        Some(end) if offset <= end && end <= bytes.len() => Ok(bytes[offset..end].to_vec()),
        _ => Err(bad(format!(
            "external data `{location}` is {} bytes, shorter than offset {offset} + length {}",
            bytes.len(),
            length.map_or("?".into(), |l| l.to_string())
        ))),
    }
}

fn from_raw(dtype: DataType, raw: &[u8], count: usize) -> std::result::Result<Data, String> {
    let width = match dtype {
        DataType::FLOAT | DataType::INT32 | DataType::UINT32 => 4,
        DataType::FLOAT16 | DataType::BFLOAT16 | DataType::INT16 | DataType::UINT16 => 2,
        DataType::DOUBLE | DataType::INT64 | DataType::UINT64 => 8,
        DataType::INT8 | DataType::UINT8 | DataType::BOOL => 1,
        other => return Err(format!("unsupported data type {other:?}")),
    };
    if raw.len() != count * width {
        return Err(format!(
            "raw data is {} bytes; {count} elements of {dtype:?} need {}",
            raw.len(),
            count * width
        ));
    }
    let f = |v: Vec<f32>| Ok(Data::F(v));
    let i = |v: Vec<i64>| Ok(Data::I(v));
    match dtype {
        DataType::FLOAT => f(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()),
        DataType::FLOAT16 => f(raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        DataType::BFLOAT16 => f(raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        DataType::DOUBLE => f(raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect()),
        DataType::INT64 | DataType::UINT64 => i(raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()),
        DataType::INT32 => i(raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
            .collect()),
        DataType::UINT32 => i(raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as i64)
            .collect()),
        DataType::INT16 => i(raw
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as i64)
            .collect()),
        DataType::UINT16 => i(raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as i64)
            .collect()),
        DataType::INT8 => i(raw.iter().map(|&b| b as i8 as i64).collect()),
        _ => i(raw.iter().map(|&b| b as i64).collect()),
    }
}

/// Typed fields: float_data, double_data, int64_data, int32_data (which also carries the
/// 16- and 8-bit types, FLOAT16/BFLOAT16 as their bit patterns).
fn from_fields(t: &TensorProto, dtype: DataType) -> std::result::Result<Data, String> {
    Ok(match dtype {
        DataType::FLOAT => Data::F(t.float_data.clone()),
        DataType::DOUBLE => Data::F(t.double_data.iter().map(|&v| v as f32).collect()),
        DataType::FLOAT16 => Data::F(
            t.int32_data
                .iter()
                .map(|&b| half::f16::from_bits(b as u16).to_f32())
                .collect(),
        ),
        DataType::BFLOAT16 => Data::F(
            t.int32_data
                .iter()
                .map(|&b| half::bf16::from_bits(b as u16).to_f32())
                .collect(),
        ),
        DataType::INT64 => Data::I(t.int64_data.clone()),
        DataType::UINT64 => Data::I(t.uint64_data.iter().map(|&v| v as i64).collect()),
        DataType::INT32
        | DataType::INT16
        | DataType::INT8
        | DataType::UINT16
        | DataType::UINT8
        | DataType::BOOL => Data::I(t.int32_data.iter().map(|&v| v as i64).collect()),
        DataType::UINT32 => Data::I(t.uint64_data.iter().map(|&v| v as i64).collect()),
        other => return Err(format!("unsupported data type {other:?}")),
    })
}
