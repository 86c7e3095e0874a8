//! Length-prefixed bincode codec for the request-response protocol.
//!
//! Frame: `u32` big-endian length, then the bincode-encoded message, whose
//! first byte is the variant index. The variant's limit (see [`wire`]) is
//! checked before the body is read, so a peer cannot make us buffer more
//! than the message kind allows. Decoding goes through
//! `fairgrid_protocol::codec::decode_exact` (byte limit, no trailing bytes).
//!
//! [`wire`]: super::wire

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use super::wire::{Request, Response, WireEnum};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/fairgrid/req/1");

#[derive(Debug, Clone, Copy, Default)]
pub struct FairgridCodec;

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Reads one frame of `T`, enforcing the per-variant limit.
pub async fn read_frame<T: WireEnum, R: AsyncRead + Unpin>(io: &mut R) -> io::Result<T> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(invalid(format!("empty {} frame", T::NAME)));
    }
    let mut tag = [0u8; 1];
    io.read_exact(&mut tag).await?;
    let (name, limit) = T::LIMITS.get(tag[0] as usize).ok_or_else(|| {
        invalid(format!(
            "unknown {} kind {} (this node speaks 0..{})",
            T::NAME,
            tag[0],
            T::LIMITS.len()
        ))
    })?;
    if len > *limit {
        return Err(invalid(format!(
            "{} {name} of {len} bytes exceeds its {limit}-byte limit",
            T::NAME
        )));
    }
    let mut buf = vec![0u8; len];
    buf[0] = tag[0];
    io.read_exact(&mut buf[1..]).await?;
    decode_frame(&buf)
}

/// Decodes a frame body (without the length prefix).
pub fn decode_frame<T: WireEnum>(buf: &[u8]) -> io::Result<T> {
    let Some(&tag) = buf.first() else {
        return Err(invalid(format!("empty {}", T::NAME)));
    };
    let (_, limit) = T::LIMITS
        .get(tag as usize)
        .ok_or_else(|| invalid(format!("unknown {} kind {tag}", T::NAME)))?;
    fairgrid_protocol::codec::decode_exact(T::NAME, buf, *limit).map_err(|e| invalid(e.to_string()))
}

/// Encodes `message` as a frame, refusing to send what the peer would refuse.
pub fn encode_frame<T: WireEnum>(message: &T) -> io::Result<Vec<u8>> {
    let body = fairgrid_protocol::codec::encode(message);
    let (name, limit) = T::LIMITS
        .get(body[0] as usize)
        .ok_or_else(|| invalid(format!("{} kind {} has no limit entry", T::NAME, body[0])))?;
    if body.len() > *limit {
        return Err(invalid(format!(
            "{} {name} of {} bytes exceeds its {limit}-byte limit",
            T::NAME,
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

async fn write_frame<T: WireEnum, W: AsyncWrite + Unpin>(
    io: &mut W,
    message: &T,
) -> io::Result<()> {
    let frame = encode_frame(message)?;
    io.write_all(&frame).await?;
    io.flush().await
}

impl libp2p::request_response::Codec for FairgridCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::Hello;
    use rand::{Rng, RngCore, SeedableRng};

    fn read<T: WireEnum>(bytes: &[u8]) -> io::Result<T> {
        futures::executor::block_on(read_frame(&mut futures::io::Cursor::new(bytes)))
    }

    #[test]
    fn round_trips() {
        let req = Request::Hello(Hello {
            protocol_version: 1,
            certificate: None,
        });
        let frame = encode_frame(&req).unwrap();
        assert_eq!(read::<Request>(&frame).unwrap(), req);
        let resp = Response::Adverts(vec![vec![7; 100]; 3]);
        assert_eq!(
            read::<Response>(&encode_frame(&resp).unwrap()).unwrap(),
            resp
        );
    }

    #[test]
    fn oversized_unknown_and_trailing_frames_are_refused_before_buffering() {
        // A hello claiming 1 GiB: refused from the header alone.
        let mut frame = (1u32 << 30).to_be_bytes().to_vec();
        frame.push(0);
        let err = read::<Request>(&frame).unwrap_err().to_string();
        assert!(err.contains("exceeds its 2048-byte limit"), "{err}");

        let mut frame = 5u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[99, 0, 0, 0, 0]);
        let err = read::<Request>(&frame).unwrap_err().to_string();
        assert!(err.contains("unknown request kind 99"), "{err}");

        // A valid snapshot request with a trailing byte inside the frame.
        let mut frame = 2u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[1, 0]);
        assert!(read::<Request>(&frame).is_err());

        let too_big = Response::Adverts(vec![vec![0; 10 * 1024]; 300]);
        assert!(
            encode_frame(&too_big).is_err(),
            "never sends what peers refuse"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            // Half the time, a well-formed length prefix with a known tag.
            if len > 5 && rng.random_bool(0.5) {
                bytes[..4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
                bytes[4] = rng.random_range(0..3);
            }
            if read::<Request>(&bytes).is_ok() {
                decoded += 1;
            }
            let _ = read::<Response>(&bytes);
            let _ = decode_frame::<Response>(&bytes);
        }
        // Mutations of valid frames: every one either decodes or errors.
        let valid = encode_frame(&Response::Adverts(vec![vec![1; 40]; 2])).unwrap();
        for i in 0..valid.len() {
            for bit in 0..8 {
                let mut m = valid.clone();
                m[i] ^= 1 << bit;
                let _ = read::<Response>(&m);
            }
        }
        assert!(decoded < 20_000);
    }
}
