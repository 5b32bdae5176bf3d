/* qdarts integer reference inference for DAGs (DARTS final networks): a portable C99 runtime
 * for models written by qdarts.export.graph_c. It computes exactly what the numpy reference
 * qdarts.export.graph_integer.integer_graph_trace computes: the same integers, bit for bit.
 *
 * Tensors: NHWC codes of one sample, one byte each, zero point 0: int8 (two's complement) on a
 * signed grid, uint8 on an unsigned one. Tensor 0 is the model input (uint8). Each tensor has
 * a region of the scratch arena, planned by the exporter from liveness: regions are reused once
 * the last node reading a tensor has run, and a node's output never overlaps its inputs.
 * Weights: signed codes, output channels first (conv OHWI, linear (cout, cin)), C order,
 * packed in 8-, 4- or 2-bit containers as in qdarts_infer.h.
 *
 * Nodes (y: the output tensor; MBQM: TFLite's MultiplyByQuantizedMultiplier in the model's
 * rounding; clamp to [out_min, out_max]):
 *   CONV:    acc = bias[c] + sum x[(oy*s - pad_top + ky*d) + offset, ...] * w, zero padding,
 *            then y = clamp(MBQM(acc, multiplier[c], shift[c])); the first `offset` rows and
 *            columns of x are cropped before padding;
 *   REQUANT: y = clamp(MBQM(x, multiplier[c], shift[c]));
 *   ADD:     TFLite's int8 ADD with zero points 0 and L = 20:
 *            y = clamp(MBQM(MBQM(a*2^L, m[0], s[0]) + MBQM(b*2^L, m[1], s[1]), m[2], s[2]));
 *   CONCAT:  channel concat of inputs on one grid (a copy);
 *   MAX_POOL / AVG_POOL: 3x3, padding 1, stride 1 or 2, over the real pixels only; the average
 *            is (sum + n/2) / n for sum >= 0, else -((-sum + n/2) / n) (round half away);
 *   GLOBAL_AVG_POOL: sum over H x W per channel, then clamp(MBQM(sum, multiplier[c], shift[c]));
 *   LINEAR:  the last node; acc[c] = bias[c] + sum x * w, the model's int32 output. */
#ifndef QDARTS_GRAPH_H_
#define QDARTS_GRAPH_H_

#include <stddef.h>
#include <stdint.h>

#include "qdarts_infer.h" /* qdarts_multiply_by_quantized_multiplier, rounding, status codes */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  QDARTS_GRAPH_CONV = 1,
  QDARTS_GRAPH_REQUANT = 2,
  QDARTS_GRAPH_ADD = 3,
  QDARTS_GRAPH_CONCAT = 4,
  QDARTS_GRAPH_MAX_POOL = 5,
  QDARTS_GRAPH_AVG_POOL = 6,
  QDARTS_GRAPH_GLOBAL_AVG_POOL = 7,
  QDARTS_GRAPH_LINEAR = 8
} qdarts_graph_op;

typedef struct {
  int32_t h, w, c;   /* (1, 1, C) after the global pool */
  int32_t is_signed; /* 1: int8 codes; 0: uint8 codes */
  size_t offset;     /* byte offset of the tensor in the scratch arena */
} qdarts_graph_tensor;

typedef struct {
  const char *name;
  int32_t op; /* qdarts_graph_op */
  int32_t num_inputs;
  const int32_t *inputs; /* tensor indices */
  int32_t output;        /* tensor index (the linear: -1) */
  int32_t kernel_h, kernel_w, stride, pad_top, pad_left, dilation, groups, offset;
  int32_t w_container_bits;  /* 8, 4 or 2 (conv, linear) */
  int32_t out_min, out_max;  /* clamp of requantized outputs */
  const uint8_t *weights;    /* conv, linear */
  const int32_t *bias;       /* conv, linear: out_c int32 codes */
  const int32_t *multiplier; /* out_c (conv, requant, global pool) or 3 (add) */
  const int32_t *shift;      /* exponents: M = multiplier * 2^(shift - 31) */
} qdarts_graph_node;

typedef struct {
  int32_t num_tensors;
  const qdarts_graph_tensor *tensors;
  int32_t num_nodes;
  const qdarts_graph_node *nodes;
  int32_t rounding; /* qdarts_rounding */
  int32_t num_classes;
  int32_t input_max;        /* input codes lie in [0, input_max] */
  size_t input_bytes;       /* tensor 0 */
  size_t scratch_bytes;     /* the arena: every tensor */
  size_t trace_bytes;       /* every node output but the logits, in node order */
  float input_scale;        /* real input = code * input_scale */
  const float *logit_scale; /* num_classes: logit = accumulator * logit_scale[c] */
} qdarts_graph_model;

/* Runs one sample: input (input_bytes uint8 codes, NHWC), scratch (scratch_bytes), the
 * num_classes int32 accumulators, and trace (NULL, or trace_bytes: every node output's codes
 * but the logits, as bytes, in node order). Returns QDARTS_OK or an error code. */
int qdarts_graph_infer(const qdarts_graph_model *model, const uint8_t *input, uint8_t *scratch,
                       int32_t *accumulators, uint8_t *trace);

/* logits[c] = (float)((double)accumulators[c] * (double)model->logit_scale[c]). */
void qdarts_graph_logits(const qdarts_graph_model *model, const int32_t *accumulators,
                         float *logits);

#ifdef __cplusplus
}
#endif

#endif /* QDARTS_GRAPH_H_ */
