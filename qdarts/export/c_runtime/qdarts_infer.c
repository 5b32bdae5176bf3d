/* qdarts integer reference inference (C99). See qdarts_infer.h for the arithmetic.
 *
 * Written for clarity and exactness, not speed: weights are unpacked one code at a time. Only
 * behaviour that C99 defines is used: int32_t/int64_t are two's complement, but right shifts
 * of negative values are avoided (floor_shift) and integer division truncates toward zero. */
#include "qdarts_infer.h"

#include <string.h>

/* floor(v / 2^e) for 0 <= e <= 62, |v| < 2^63. */
static int64_t floor_shift(int64_t v, int32_t e) {
  return v >= 0 ? v >> e : -(((-v) - 1) >> e) - 1;
}

static int32_t saturate_int32(int64_t v) {
  if (v > INT32_MAX) return INT32_MAX;
  if (v < INT32_MIN) return INT32_MIN;
  return (int32_t)v;
}

/* gemmlowp SaturatingRoundingDoublingHighMul: trunc((a*b + nudge) / 2^31). */
static int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  int64_t ab, nudge;
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  ab = (int64_t)a * (int64_t)b;
  nudge = ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^e to nearest, ties away from zero (0 <= e <= 31). */
static int32_t rounding_divide_by_pot(int32_t x, int32_t e) {
  int64_t pot = (int64_t)1 << e;
  int64_t quotient = floor_shift(x, e);
  int64_t remainder = (int64_t)x - quotient * pot; /* in [0, 2^e) */
  int64_t threshold = ((pot - 1) >> 1) + (x < 0 ? 1 : 0);
  return (int32_t)(quotient + (remainder > threshold ? 1 : 0));
}

int32_t qdarts_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift,
                                                int32_t rounding) {
  if (rounding == QDARTS_ROUNDING_SINGLE) {
    int32_t total = 31 - shift; /* in [1, 62] */
    int64_t product = (int64_t)x * (int64_t)multiplier + ((int64_t)1 << (total - 1));
    return saturate_int32(floor_shift(product, total));
  } else {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    int32_t shifted = saturate_int32((int64_t)x * ((int64_t)1 << left));
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier),
                                  right);
  }
}

/* The signed code at flat index i of a layer's packed weights. */
static int32_t weight_code(const qdarts_layer *layer, size_t i) {
  int32_t v;
  switch (layer->w_container_bits) {
    case 8:
      v = layer->weights[i];
      return v >= 128 ? v - 256 : v;
    case 4:
      v = (layer->weights[i >> 1] >> (4 * (i & 1))) & 0xF;
      return v >= 8 ? v - 16 : v;
    default: /* 2 */
      v = (layer->weights[i >> 2] >> (2 * (i & 3))) & 0x3;
      return v >= 2 ? v - 4 : v;
  }
}

static uint8_t requantize(const qdarts_layer *layer, int32_t acc, int32_t c, int32_t rounding) {
  int32_t y = qdarts_multiply_by_quantized_multiplier(acc, layer->multiplier[c], layer->shift[c],
                                                      rounding);
  int64_t z = (int64_t)y + layer->out_zero_point;
  if (z < layer->out_min) z = layer->out_min;
  if (z > layer->out_max) z = layer->out_max;
  return (uint8_t)z;
}

static void run_conv(const qdarts_layer *layer, const uint8_t *x, uint8_t *y, int32_t rounding) {
  int32_t cg = layer->in_c / layer->groups;
  int32_t per_group = layer->out_c / layer->groups;
  int32_t oy, ox, oc, ky, kx, ci;
  for (oy = 0; oy < layer->out_h; ++oy) {
    for (ox = 0; ox < layer->out_w; ++ox) {
      for (oc = 0; oc < layer->out_c; ++oc) {
        int32_t first_channel = (oc / per_group) * cg;
        int32_t acc = layer->bias[oc];
        for (ky = 0; ky < layer->kernel_h; ++ky) {
          int32_t iy = oy * layer->stride - layer->pad_top + ky;
          if (iy < 0 || iy >= layer->in_h) continue; /* zero padding: code 0 */
          for (kx = 0; kx < layer->kernel_w; ++kx) {
            int32_t ix = ox * layer->stride - layer->pad_left + kx;
            const uint8_t *px;
            size_t w_index;
            if (ix < 0 || ix >= layer->in_w) continue;
            px = x + ((size_t)iy * (size_t)layer->in_w + (size_t)ix) * (size_t)layer->in_c +
                 (size_t)first_channel;
            w_index = (((size_t)oc * (size_t)layer->kernel_h + (size_t)ky) *
                           (size_t)layer->kernel_w + (size_t)kx) * (size_t)cg;
            for (ci = 0; ci < cg; ++ci) {
              acc += (int32_t)px[ci] * weight_code(layer, w_index + (size_t)ci);
            }
          }
        }
        y[((size_t)oy * (size_t)layer->out_w + (size_t)ox) * (size_t)layer->out_c +
          (size_t)oc] = requantize(layer, acc, oc, rounding);
      }
    }
  }
}

static void run_global_avg_pool(const qdarts_layer *layer, const uint8_t *x, uint8_t *y,
                                 int32_t rounding) {
  size_t pixels = (size_t)layer->in_h * (size_t)layer->in_w;
  size_t p;
  int32_t c;
  for (c = 0; c < layer->in_c; ++c) {
    int32_t sum = 0;
    for (p = 0; p < pixels; ++p) sum += x[p * (size_t)layer->in_c + (size_t)c];
    y[c] = requantize(layer, sum, c, rounding);
  }
}

static void run_linear(const qdarts_layer *layer, const uint8_t *x, int32_t *acc) {
  int32_t o, i;
  for (o = 0; o < layer->out_c; ++o) {
    int32_t sum = layer->bias[o];
    size_t row = (size_t)o * (size_t)layer->in_c;
    for (i = 0; i < layer->in_c; ++i) sum += (int32_t)x[i] * weight_code(layer, row + (size_t)i);
    acc[o] = sum;
  }
}

/* TFLite's int8 ADD in the code domain (see qdarts_infer.h); multiplier/shift: skip, h, out. */
static void run_add(const qdarts_layer *layer, const uint8_t *h, const uint8_t *skip, uint8_t *y,
                    int32_t rounding) {
  size_t n = (size_t)layer->in_h * (size_t)layer->in_w * (size_t)layer->in_c, i;
  const int32_t *m = layer->multiplier, *s = layer->shift;
  for (i = 0; i < n; ++i) {
    int32_t a = (int32_t)skip[i] * ((int32_t)1 << QDARTS_ADD_LEFT_SHIFT);
    int32_t b = ((int32_t)h[i] - layer->in_zero_point) * ((int32_t)1 << QDARTS_ADD_LEFT_SHIFT);
    int64_t sum = (int64_t)qdarts_multiply_by_quantized_multiplier(a, m[0], s[0], rounding) +
                  (int64_t)qdarts_multiply_by_quantized_multiplier(b, m[1], s[1], rounding);
    int32_t v = qdarts_multiply_by_quantized_multiplier(saturate_int32(sum), m[2], s[2],
                                                        rounding);
    int64_t z = (int64_t)v + layer->out_zero_point;
    if (z < layer->out_min) z = layer->out_min;
    if (z > layer->out_max) z = layer->out_max;
    y[i] = (uint8_t)z;
  }
}

static size_t input_bytes(const qdarts_layer *layer) {
  return (size_t)layer->in_h * (size_t)layer->in_w * (size_t)layer->in_c;
}

static size_t output_bytes(const qdarts_layer *layer) {
  return (size_t)layer->out_h * (size_t)layer->out_w * (size_t)layer->out_c;
}

/* Checks what the loop below relies on; 0 when the layer table is consistent. */
static int check_model(const qdarts_model *model) {
  int32_t i, buffers = 2;
  if (model->num_layers < 1 || model->layers == NULL) return 1;
  for (i = 0; i < model->num_layers; ++i) {
    if (model->layers[i].save_input) buffers = 3;
  }
  if (model->buffer_bytes == 0 || model->scratch_bytes / (size_t)buffers < model->buffer_bytes)
    return 1;
  if (model->rounding != QDARTS_ROUNDING_SINGLE && model->rounding != QDARTS_ROUNDING_DOUBLE)
    return 1;
  for (i = 0; i < model->num_layers; ++i) {
    const qdarts_layer *layer = &model->layers[i];
    int last = i == model->num_layers - 1;
    if (i == 0 && model->input_bytes != (size_t)layer->in_h * (size_t)layer->in_w *
                                             (size_t)layer->in_c)
      return 1;
    if (i > 0) {
      const qdarts_layer *prev = &model->layers[i - 1];
      if (layer->in_h != prev->out_h || layer->in_w != prev->out_w || layer->in_c != prev->out_c)
        return 1;
    }
    if (last != (layer->op == QDARTS_OP_LINEAR)) return 1;
    if (layer->op == QDARTS_OP_CONV) {
      if (layer->groups < 1 || layer->in_c % layer->groups || layer->out_c % layer->groups)
        return 1;
    } else if (layer->op == QDARTS_OP_GLOBAL_AVG_POOL) {
      if (layer->out_c != layer->in_c) return 1;
    } else if (layer->op == QDARTS_OP_LINEAR) {
      if (layer->in_h != 1 || layer->in_w != 1 || layer->out_c != model->num_classes) return 1;
    } else if (layer->op == QDARTS_OP_ADD) {
      const qdarts_layer *skip;
      if (layer->skip_layer < 0 || layer->skip_layer >= i) return 1;
      skip = &model->layers[layer->skip_layer];
      if (!skip->save_input || skip->in_h != layer->in_h || skip->in_w != layer->in_w ||
          skip->in_c != layer->in_c || layer->out_h != layer->in_h ||
          layer->out_w != layer->in_w || layer->out_c != layer->in_c)
        return 1;
    } else {
      return 1;
    }
    if (layer->save_input && input_bytes(layer) > model->buffer_bytes) return 1;
    if (layer->op == QDARTS_OP_CONV || layer->op == QDARTS_OP_LINEAR) {
      int32_t bits = layer->w_container_bits;
      if (layer->weights == NULL || layer->bias == NULL) return 1;
      if (bits != 8 && bits != 4 && bits != 2) return 1;
    }
    if (!last) {
      if (layer->multiplier == NULL || layer->shift == NULL) return 1;
      if (output_bytes(layer) > model->buffer_bytes) return 1;
    }
  }
  return 0;
}

int qdarts_infer(const qdarts_model *model, const uint8_t *input, uint8_t *scratch,
                 int32_t *accumulators, uint8_t *trace) {
  const uint8_t *x = input;
  uint8_t *saved;
  size_t half, i, trace_offset = 0;
  int32_t k;
  if (model == NULL || input == NULL || scratch == NULL || accumulators == NULL)
    return QDARTS_ERROR_ARGUMENT;
  if (check_model(model)) return QDARTS_ERROR_MODEL;
  for (i = 0; i < model->input_bytes; ++i) {
    if (input[i] > model->layers[0].in_max) return QDARTS_ERROR_INPUT_RANGE;
  }
  half = model->buffer_bytes;
  saved = scratch + 2 * half; /* only used with residual adds (3 buffers) */
  for (k = 0; k < model->num_layers; ++k) {
    const qdarts_layer *layer = &model->layers[k];
    uint8_t *y = scratch + (size_t)(k % 2) * half;
    if (layer->save_input) memcpy(saved, x, input_bytes(layer));
    if (layer->op == QDARTS_OP_LINEAR) {
      run_linear(layer, x, accumulators);
      break;
    }
    if (layer->op == QDARTS_OP_CONV) {
      run_conv(layer, x, y, model->rounding);
    } else if (layer->op == QDARTS_OP_ADD) {
      run_add(layer, x, saved, y, model->rounding);
    } else {
      run_global_avg_pool(layer, x, y, model->rounding);
    }
    if (trace != NULL) {
      memcpy(trace + trace_offset, y, output_bytes(layer));
      trace_offset += output_bytes(layer);
    }
    x = y;
  }
  return QDARTS_OK;
}

void qdarts_logits(const qdarts_model *model, const int32_t *accumulators, float *logits) {
  int32_t c;
  for (c = 0; c < model->num_classes; ++c) {
    logits[c] = (float)((double)accumulators[c] * (double)model->logit_scale[c]);
  }
}
