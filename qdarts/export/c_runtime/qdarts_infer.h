/* qdarts integer reference inference: a portable C99 runtime for models written by
 * qdarts.export.c_export (model.h / model.c). It computes exactly what the numpy reference
 * qdarts.export.integer_model.integer_trace computes: the same integers, bit for bit.
 *
 * Data layout: activations are NHWC uint8 codes of unsigned quantizers with zero point 0, one
 * sample per call. Weights are signed codes, output channels first (conv OHWI, linear
 * (cout, cin)), flattened in C order and packed in containers of 8, 4 or 2 bits:
 *   8 bits: one int8 per byte (two's complement);
 *   4 bits: two per byte, element 2k in the low nibble, 2k+1 in the high nibble;
 *   2 bits: four per byte, element 4k+j in bits 2j..2j+1 (two's complement: -1 is 0b11).
 * A trailing partial byte is zero padded.
 *
 * Per layer: conv and linear accumulate sum(x * w) + bias in int32 (the exporter checks that
 * no input can overflow it); conv and global average pool then requantize per output channel,
 * y = clamp(MBQM(acc, multiplier[c], shift[c]), out_min, out_max), where MBQM is TFLite's
 * MultiplyByQuantizedMultiplier in the model's rounding mode (see qdarts_rounding). The final
 * linear outputs its int32 accumulators; logits = acc * logit_scale[c].
 *
 * A residual add (TFLite's int8 ADD) reads its input h (codes with zero point in_zero_point,
 * 128: the conv before it writes signed int8 as uint8) and the saved input codes x of layer
 * skip_layer (zero point 0): with L = QDARTS_ADD_LEFT_SHIFT,
 *   y = clamp(MBQM(MBQM(x * 2^L, multiplier[0], shift[0])
 *                  + MBQM((h - in_zero_point) * 2^L, multiplier[1], shift[1]),
 *                  multiplier[2], shift[2]) + out_zero_point, out_min, out_max).
 * The skip layer (save_input = 1) copies its input into a third scratch buffer. */
#ifndef QDARTS_INFER_H_
#define QDARTS_INFER_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by qdarts_infer. */
#define QDARTS_OK 0
#define QDARTS_ERROR_ARGUMENT 1    /* a NULL pointer */
#define QDARTS_ERROR_INPUT_RANGE 2 /* an input code above the first layer's in_max */
#define QDARTS_ERROR_MODEL 3       /* an inconsistent layer table */

typedef enum {
  QDARTS_OP_CONV = 1,            /* 2-D convolution, grouped (depthwise when groups == cin) */
  QDARTS_OP_GLOBAL_AVG_POOL = 2, /* int32 sum over H x W, 1/(H*W) folded into the multiplier */
  QDARTS_OP_LINEAR = 3,          /* fully connected; must be the last layer */
  QDARTS_OP_ADD = 4              /* residual add of the previous output and a saved input */
} qdarts_op;

#define QDARTS_ADD_LEFT_SHIFT 20

typedef enum {
  /* floor((x * m + 2^(t-1)) / 2^t), t = 31 - shift: TFLITE_SINGLE_ROUNDING=1, XNNPACK, ruy */
  QDARTS_ROUNDING_SINGLE = 1,
  /* gemmlowp: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^left, m), right) */
  QDARTS_ROUNDING_DOUBLE = 2
} qdarts_rounding;

typedef struct {
  const char *name;
  int32_t op; /* qdarts_op */
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c; /* linear and pool: out_h = out_w = 1 */
  int32_t kernel_h, kernel_w, stride, pad_top, pad_left, groups; /* conv only */
  int32_t w_bits;           /* codes in [-(2^(w_bits-1)-1), 2^(w_bits-1)-1] */
  int32_t w_container_bits; /* 8, 4 or 2 */
  int32_t in_max;           /* input codes lie in [0, in_max] */
  int32_t out_min, out_max; /* clamp of requantized outputs */
  int32_t out_zero_point;   /* added to requantized outputs (128 before an add, else 0) */
  int32_t in_zero_point;    /* add only: the zero point of its input h */
  int32_t skip_layer;       /* add only: the layer whose (saved) input codes are added */
  int32_t save_input;       /* 1: a later add reads this layer's input; it is saved */
  const uint8_t *weights;   /* packed codes; NULL for the pool */
  const int32_t *bias;      /* out_c int32 codes; NULL for the pool */
  const int32_t *multiplier; /* out_c fixed-point multipliers (add: 3); NULL for the linear */
  const int32_t *shift;      /* exponents: M = multiplier * 2^(shift - 31) */
} qdarts_layer;

typedef struct {
  int32_t num_layers;
  const qdarts_layer *layers;
  int32_t rounding;         /* qdarts_rounding */
  int32_t num_classes;
  size_t input_bytes;       /* in_h * in_w * in_c of the first layer */
  size_t buffer_bytes;      /* one activation buffer: the largest layer input or output */
  size_t scratch_bytes;     /* what qdarts_infer needs: 2 buffers, 3 with a residual add */
  size_t trace_bytes;       /* all non-final layers' outputs, concatenated */
  float input_scale;        /* real input = code * input_scale */
  const float *logit_scale; /* num_classes: logit = accumulator * logit_scale[c] */
} qdarts_model;

/* TFLite's MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), rounded to nearest
 * (ties toward +infinity; gemmlowp's final shift breaks ties away from zero), saturated to
 * int32. shift must lie in [-31, 30]. */
int32_t qdarts_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift,
                                                int32_t rounding);

/* Runs one sample. input: model->input_bytes codes (NHWC). scratch: model->scratch_bytes
 * bytes. accumulators: model->num_classes int32 outputs. trace: NULL, or model->trace_bytes
 * bytes that receive every non-final layer's output codes in layer order. Returns QDARTS_OK
 * or an error code (outputs are then unspecified). */
int qdarts_infer(const qdarts_model *model, const uint8_t *input, uint8_t *scratch,
                 int32_t *accumulators, uint8_t *trace);

/* logits[c] = (float)((double)accumulators[c] * (double)model->logit_scale[c]). */
void qdarts_logits(const qdarts_model *model, const int32_t *accumulators, float *logits);

#ifdef __cplusplus
}
#endif

#endif /* QDARTS_INFER_H_ */
