//! The codec of the `Scoring` service (and of the Open Inference Protocol's, all prost). tonic owns the framing, compression and size limits; this
//! codec only turns a message's bytes into a value and back:
//!
//! - the hot requests (`ScoreRequest`, `ScoreBatchRequest`, stream messages) stay raw bytes
//!   ([`RawRequest`]): the handler decodes them with `altscore-wire` straight into rows of the
//!   model the request is routed to, and a malformed message becomes that message's
//!   `INVALID_ARGUMENT` (in a stream the stream goes on);
//! - the hot responses arrive already encoded by `altscore-wire` ([`Encoded`]);
//! - everything else is prost, with malformed bytes answered `INVALID_ARGUMENT` (prost's default
//!   codec says `INTERNAL`).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::errors::Failure;

/// Per-call buffers: most messages here are a few hundred bytes; a small first buffer keeps many
/// concurrent calls cheap, and it grows for big batches.
const BUFFER_BYTES: usize = 2 * 1024;
/// Ready stream answers written in one go.
const YIELD_BYTES: usize = 32 * 1024;

/// A request message's bytes, decoded by the handler.
#[derive(Debug, Clone)]
pub struct RawRequest(pub Bytes);

/// A response message already encoded.
#[derive(Debug, Clone)]
pub struct Encoded(pub Vec<u8>);

pub trait WireDecode: Sized + Send + 'static {
    fn decode(buf: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

pub trait WireEncode: Send + 'static {
    fn encode(self, buf: &mut EncodeBuf<'_>) -> Result<(), Status>;
}

impl WireDecode for RawRequest {
    fn decode(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let n = buf.remaining();
        Ok(RawRequest(buf.copy_to_bytes(n)))
    }
}

impl WireEncode for Encoded {
    fn encode(self, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&self.0);
        Ok(())
    }
}

macro_rules! prost_wire {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl WireDecode for $t {
            fn decode(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
                <$t as prost::Message>::decode(buf)
                    .map_err(|e| Failure::malformed($name, e).to_status())
            }
        }

        impl WireEncode for $t {
            fn encode(self, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
                prost::Message::encode(&self, buf)
                    .map_err(|_| Failure::Internal.to_status())
            }
        }
    )*};
}

prost_wire!(
    crate::proto::GetModelInfoRequest => "GetModelInfoRequest",
    crate::proto::GetModelInfoResponse => "GetModelInfoResponse",
    crate::proto::ReportOutcomeRequest => "ReportOutcomeRequest",
    crate::proto::ReportOutcomeResponse => "ReportOutcomeResponse",
    crate::proto::inference::ServerLiveRequest => "ServerLiveRequest",
    crate::proto::inference::ServerLiveResponse => "ServerLiveResponse",
    crate::proto::inference::ServerReadyRequest => "ServerReadyRequest",
    crate::proto::inference::ServerReadyResponse => "ServerReadyResponse",
    crate::proto::inference::ModelReadyRequest => "ModelReadyRequest",
    crate::proto::inference::ModelReadyResponse => "ModelReadyResponse",
    crate::proto::inference::ServerMetadataRequest => "ServerMetadataRequest",
    crate::proto::inference::ServerMetadataResponse => "ServerMetadataResponse",
    crate::proto::inference::ModelMetadataRequest => "ModelMetadataRequest",
    crate::proto::inference::ModelMetadataResponse => "ModelMetadataResponse",
    crate::proto::inference::ModelInferRequest => "ModelInferRequest",
    crate::proto::inference::ModelInferResponse => "ModelInferResponse",
);

/// `E` out, `D` in (the server's view).
#[derive(Debug)]
pub struct WireCodec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for WireCodec<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

#[derive(Debug)]
pub struct WireEncoder<E>(PhantomData<fn() -> E>);

#[derive(Debug)]
pub struct WireDecoder<D>(PhantomData<fn() -> D>);

impl<E: WireEncode> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
    }
}

impl<D: WireDecode> Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
    }
}

impl<E: WireEncode, D: WireDecode> Codec for WireCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}
