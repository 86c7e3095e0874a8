//! A data set's input values: bytes (images, scaled by 1/255 when a batch
//! is built) or f32 (images already normalised, tabular features), kept
//! as they were read so byte images stay four times smaller.

/// Which values a data set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelKind {
    U8,
    F32,
}

impl PixelKind {
    pub fn bytes(self) -> usize {
        match self {
            PixelKind::U8 => 1,
            PixelKind::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PixelKind::U8 => "uint8",
            PixelKind::F32 => "float32",
        }
    }
}

/// All samples' values, sample-major.
#[derive(Debug, Clone)]
pub enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// Two value sets are equal when their kinds and bits are (so equality
/// stays reflexive: shards compare by content).
impl PartialEq for Pixels {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Pixels::U8(a), Pixels::U8(b)) => a == b,
            (Pixels::F32(a), Pixels::F32(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }
}

impl Eq for Pixels {}

impl From<Vec<u8>> for Pixels {
    fn from(v: Vec<u8>) -> Self {
        Pixels::U8(v)
    }
}

impl From<Vec<f32>> for Pixels {
    fn from(v: Vec<f32>) -> Self {
        Pixels::F32(v)
    }
}

impl Pixels {
    pub fn empty(kind: PixelKind) -> Self {
        match kind {
            PixelKind::U8 => Pixels::U8(Vec::new()),
            PixelKind::F32 => Pixels::F32(Vec::new()),
        }
    }

    pub fn kind(&self) -> PixelKind {
        match self {
            Pixels::U8(_) => PixelKind::U8,
            Pixels::F32(_) => PixelKind::F32,
        }
    }

    /// Values held (not bytes).
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> SampleRef<'_> {
        match self {
            Pixels::U8(v) => SampleRef::U8(&v[range]),
            Pixels::F32(v) => SampleRef::F32(&v[range]),
        }
    }

    /// Appends `values`, which must be of this kind (the callers check
    /// that every source shares one kind first).
    pub fn extend(&mut self, values: SampleRef<'_>) {
        match (self, values) {
            (Pixels::U8(v), SampleRef::U8(s)) => v.extend_from_slice(s),
            (Pixels::F32(v), SampleRef::F32(s)) => v.extend_from_slice(s),
            (this, values) => panic!(
                "appending {} values to {} ones",
                values.kind().name(),
                this.kind().name()
            ),
        }
    }

    /// Drops every value but keeps the allocation; the kind becomes `kind`.
    pub fn clear_as(&mut self, kind: PixelKind) {
        match (&mut *self, kind) {
            (Pixels::U8(v), PixelKind::U8) => v.clear(),
            (Pixels::F32(v), PixelKind::F32) => v.clear(),
            _ => *self = Pixels::empty(kind),
        }
    }

    /// The first value that is not finite (NaN or infinite), by index.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        match self {
            Pixels::U8(_) => None,
            Pixels::F32(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
        }
    }

    /// Little-endian bytes of every value (a shard's layout).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Pixels::U8(v) => v.clone(),
            Pixels::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// One sample's values (or a run of samples').
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleRef<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl SampleRef<'_> {
    pub fn kind(&self) -> PixelKind {
        match self {
            SampleRef::U8(_) => PixelKind::U8,
            SampleRef::F32(_) => PixelKind::F32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SampleRef::U8(v) => v.len(),
            SampleRef::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as the model sees them: bytes times `u8_scale`, floats
    /// as they are.
    pub fn to_f32(&self, u8_scale: f32) -> Vec<f32> {
        match self {
            SampleRef::U8(v) => v.iter().map(|&b| f32::from(b) * u8_scale).collect(),
            SampleRef::F32(v) => v.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_values_compare_by_bits_so_equality_is_reflexive() {
        let nan = Pixels::F32(vec![f32::NAN, 1.0]);
        assert_eq!(nan, nan.clone());
        assert_ne!(Pixels::F32(vec![0.0]), Pixels::F32(vec![-0.0]));
        assert_ne!(Pixels::U8(vec![0]), Pixels::F32(vec![0.0]));
    }

    #[test]
    fn values_extend_slice_and_serialise_little_endian() {
        let mut p = Pixels::empty(PixelKind::F32);
        p.extend(SampleRef::F32(&[1.5, -2.0]));
        assert_eq!(p.slice(1..2), SampleRef::F32(&[-2.0]));
        assert_eq!(&p.to_le_bytes()[..4], &1.5f32.to_le_bytes());
        assert_eq!(p.first_non_finite(), None);
        p.extend(SampleRef::F32(&[f32::INFINITY]));
        assert_eq!(p.first_non_finite(), Some((2, f32::INFINITY)));
        p.clear_as(PixelKind::U8);
        assert_eq!((p.kind(), p.len()), (PixelKind::U8, 0));
    }
}
