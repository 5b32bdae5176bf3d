/* qdarts integer reference inference for DAGs (C99). See qdarts_graph.h for the arithmetic.
 * Written for clarity and exactness, not speed; needs qdarts_infer.c for the fixed point. */
#include "qdarts_graph.h"

#include <string.h>

static int32_t saturate32(int64_t v) {
  if (v > INT32_MAX) return INT32_MAX;
  if (v < INT32_MIN) return INT32_MIN;
  return (int32_t)v;
}

static size_t tensor_bytes(const qdarts_graph_tensor *t) {
  return (size_t)t->h * (size_t)t->w * (size_t)t->c;
}

static int32_t load(const qdarts_graph_tensor *t, const uint8_t *arena, size_t i) {
  uint8_t b = arena[t->offset + i];
  return t->is_signed ? (b >= 128 ? (int32_t)b - 256 : (int32_t)b) : (int32_t)b;
}

static void store(const qdarts_graph_tensor *t, uint8_t *arena, size_t i, int32_t v) {
  arena[t->offset + i] = (uint8_t)(v & 0xFF); /* two's complement byte of an int8 code */
}

static int32_t weight(const qdarts_graph_node *node, size_t i) {
  int32_t v;
  switch (node->w_container_bits) {
    case 8:
      v = node->weights[i];
      return v >= 128 ? v - 256 : v;
    case 4:
      v = (node->weights[i >> 1] >> (4 * (i & 1))) & 0xF;
      return v >= 8 ? v - 16 : v;
    default: /* 2 */
      v = (node->weights[i >> 2] >> (2 * (i & 3))) & 0x3;
      return v >= 2 ? v - 4 : v;
  }
}

static int32_t requant(const qdarts_graph_node *node, int32_t acc, size_t k, int32_t rounding) {
  int32_t y = qdarts_multiply_by_quantized_multiplier(acc, node->multiplier[k], node->shift[k],
                                                      rounding);
  if (y < node->out_min) y = node->out_min;
  if (y > node->out_max) y = node->out_max;
  return y;
}

static void run_conv(const qdarts_graph_model *m, const qdarts_graph_node *node, uint8_t *arena) {
  const qdarts_graph_tensor *x = &m->tensors[node->inputs[0]], *y = &m->tensors[node->output];
  int32_t cg = x->c / node->groups, per_group = y->c / node->groups;
  int32_t h = x->h - node->offset, w = x->w - node->offset;
  int32_t oy, ox, oc, ky, kx, ci;
  for (oy = 0; oy < y->h; ++oy) {
    for (ox = 0; ox < y->w; ++ox) {
      for (oc = 0; oc < y->c; ++oc) {
        int32_t first = (oc / per_group) * cg;
        int32_t acc = node->bias[oc];
        for (ky = 0; ky < node->kernel_h; ++ky) {
          int32_t iy = oy * node->stride - node->pad_top + ky * node->dilation;
          if (iy < 0 || iy >= h) continue; /* zero padding */
          for (kx = 0; kx < node->kernel_w; ++kx) {
            int32_t ix = ox * node->stride - node->pad_left + kx * node->dilation;
            size_t base, w_index;
            if (ix < 0 || ix >= w) continue;
            base = ((size_t)(iy + node->offset) * (size_t)x->w + (size_t)(ix + node->offset)) *
                       (size_t)x->c + (size_t)first;
            w_index = (((size_t)oc * (size_t)node->kernel_h + (size_t)ky) *
                           (size_t)node->kernel_w + (size_t)kx) * (size_t)cg;
            for (ci = 0; ci < cg; ++ci) {
              acc += load(x, arena, base + (size_t)ci) * weight(node, w_index + (size_t)ci);
            }
          }
        }
        store(y, arena, ((size_t)oy * (size_t)y->w + (size_t)ox) * (size_t)y->c + (size_t)oc,
              requant(node, acc, (size_t)oc, m->rounding));
      }
    }
  }
}

static void run_requant(const qdarts_graph_model *m, const qdarts_graph_node *node,
                        uint8_t *arena) {
  const qdarts_graph_tensor *x = &m->tensors[node->inputs[0]], *y = &m->tensors[node->output];
  size_t i, n = tensor_bytes(x);
  for (i = 0; i < n; ++i) {
    store(y, arena, i, requant(node, load(x, arena, i), i % (size_t)x->c, m->rounding));
  }
}

static void run_add(const qdarts_graph_model *m, const qdarts_graph_node *node, uint8_t *arena) {
  const qdarts_graph_tensor *a = &m->tensors[node->inputs[0]];
  const qdarts_graph_tensor *b = &m->tensors[node->inputs[1]], *y = &m->tensors[node->output];
  const int32_t *mul = node->multiplier, *sh = node->shift;
  size_t i, n = tensor_bytes(y);
  for (i = 0; i < n; ++i) {
    int32_t va = load(a, arena, i) * ((int32_t)1 << QDARTS_ADD_LEFT_SHIFT);
    int32_t vb = load(b, arena, i) * ((int32_t)1 << QDARTS_ADD_LEFT_SHIFT);
    int64_t sum =
      (int64_t)qdarts_multiply_by_quantized_multiplier(va, mul[0], sh[0], m->rounding) +
      (int64_t)qdarts_multiply_by_quantized_multiplier(vb, mul[1], sh[1], m->rounding);
    int32_t v = qdarts_multiply_by_quantized_multiplier(saturate32(sum), mul[2], sh[2],
                                                        m->rounding);
    if (v < node->out_min) v = node->out_min;
    if (v > node->out_max) v = node->out_max;
    store(y, arena, i, v);
  }
}

static void run_concat(const qdarts_graph_model *m, const qdarts_graph_node *node,
                       uint8_t *arena) {
  const qdarts_graph_tensor *y = &m->tensors[node->output];
  size_t p, pixels = (size_t)y->h * (size_t)y->w;
  int32_t k, first = 0;
  for (k = 0; k < node->num_inputs; ++k) {
    const qdarts_graph_tensor *x = &m->tensors[node->inputs[k]];
    for (p = 0; p < pixels; ++p) {
      memcpy(arena + y->offset + p * (size_t)y->c + (size_t)first,
             arena + x->offset + p * (size_t)x->c, (size_t)x->c);
    }
    first += x->c;
  }
}

/* 3x3 window, padding 1, over the real pixels: the max, or the average rounded half away. */
static void run_pool(const qdarts_graph_model *m, const qdarts_graph_node *node, uint8_t *arena,
                     int is_max) {
  const qdarts_graph_tensor *x = &m->tensors[node->inputs[0]], *y = &m->tensors[node->output];
  int32_t oy, ox, c, ky, kx;
  for (oy = 0; oy < y->h; ++oy) {
    for (ox = 0; ox < y->w; ++ox) {
      for (c = 0; c < y->c; ++c) {
        int32_t best = INT32_MIN, sum = 0, count = 0, v;
        for (ky = 0; ky < 3; ++ky) {
          int32_t iy = oy * node->stride - 1 + ky;
          if (iy < 0 || iy >= x->h) continue;
          for (kx = 0; kx < 3; ++kx) {
            int32_t ix = ox * node->stride - 1 + kx;
            if (ix < 0 || ix >= x->w) continue;
            v = load(x, arena, ((size_t)iy * (size_t)x->w + (size_t)ix) * (size_t)x->c +
                                   (size_t)c);
            if (v > best) best = v;
            sum += v;
            ++count;
          }
        }
        v = is_max ? best : (sum >= 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count));
        store(y, arena, ((size_t)oy * (size_t)y->w + (size_t)ox) * (size_t)y->c + (size_t)c, v);
      }
    }
  }
}

static void run_global_avg_pool(const qdarts_graph_model *m, const qdarts_graph_node *node,
                                uint8_t *arena) {
  const qdarts_graph_tensor *x = &m->tensors[node->inputs[0]], *y = &m->tensors[node->output];
  size_t p, pixels = (size_t)x->h * (size_t)x->w;
  int32_t c;
  for (c = 0; c < x->c; ++c) {
    int32_t sum = 0;
    for (p = 0; p < pixels; ++p) sum += load(x, arena, p * (size_t)x->c + (size_t)c);
    store(y, arena, (size_t)c, requant(node, sum, (size_t)c, m->rounding));
  }
}

static void run_linear(const qdarts_graph_model *m, const qdarts_graph_node *node,
                       const uint8_t *arena, int32_t *acc) {
  const qdarts_graph_tensor *x = &m->tensors[node->inputs[0]];
  int32_t o, i;
  for (o = 0; o < m->num_classes; ++o) {
    int32_t sum = node->bias[o];
    size_t row = (size_t)o * (size_t)x->c;
    for (i = 0; i < x->c; ++i) sum += load(x, arena, (size_t)i) * weight(node, row + (size_t)i);
    acc[o] = sum;
  }
}

/* What the loop relies on: tensors inside the arena, node tensors in range, the linear last. */
static int check_model(const qdarts_graph_model *m) {
  int32_t i, k;
  if (m->num_tensors < 1 || m->num_nodes < 1 || !m->tensors || !m->nodes) return 1;
  if (m->rounding != QDARTS_ROUNDING_SINGLE && m->rounding != QDARTS_ROUNDING_DOUBLE) return 1;
  if (tensor_bytes(&m->tensors[0]) != m->input_bytes) return 1;
  for (i = 0; i < m->num_tensors; ++i) {
    if (m->tensors[i].offset + tensor_bytes(&m->tensors[i]) > m->scratch_bytes) return 1;
  }
  for (i = 0; i < m->num_nodes; ++i) {
    const qdarts_graph_node *node = &m->nodes[i];
    int last = i == m->num_nodes - 1;
    if (last != (node->op == QDARTS_GRAPH_LINEAR)) return 1;
    if (node->num_inputs < 1 || !node->inputs) return 1;
    for (k = 0; k < node->num_inputs; ++k) {
      if (node->inputs[k] < 0 || node->inputs[k] >= m->num_tensors) return 1;
    }
    if (!last && (node->output <= 0 || node->output >= m->num_tensors)) return 1;
    if (node->op == QDARTS_GRAPH_CONV || node->op == QDARTS_GRAPH_LINEAR) {
      if (!node->weights || !node->bias) return 1;
    }
    if (node->op == QDARTS_GRAPH_CONV && node->groups < 1) return 1;
    if ((node->op == QDARTS_GRAPH_CONV || node->op == QDARTS_GRAPH_REQUANT ||
         node->op == QDARTS_GRAPH_ADD || node->op == QDARTS_GRAPH_GLOBAL_AVG_POOL) &&
        (!node->multiplier || !node->shift))
      return 1;
    if (node->op == QDARTS_GRAPH_ADD && node->num_inputs != 2) return 1;
    if (node->op < QDARTS_GRAPH_CONV || node->op > QDARTS_GRAPH_LINEAR) return 1;
  }
  return 0;
}

int qdarts_graph_infer(const qdarts_graph_model *m, const uint8_t *input, uint8_t *scratch,
                       int32_t *accumulators, uint8_t *trace) {
  size_t i, trace_offset = 0;
  int32_t k;
  if (!m || !input || !scratch || !accumulators) return QDARTS_ERROR_ARGUMENT;
  if (check_model(m)) return QDARTS_ERROR_MODEL;
  for (i = 0; i < m->input_bytes; ++i) {
    if (input[i] > m->input_max) return QDARTS_ERROR_INPUT_RANGE;
  }
  memcpy(scratch + m->tensors[0].offset, input, m->input_bytes);
  for (k = 0; k < m->num_nodes; ++k) {
    const qdarts_graph_node *node = &m->nodes[k];
    switch (node->op) {
      case QDARTS_GRAPH_CONV: run_conv(m, node, scratch); break;
      case QDARTS_GRAPH_REQUANT: run_requant(m, node, scratch); break;
      case QDARTS_GRAPH_ADD: run_add(m, node, scratch); break;
      case QDARTS_GRAPH_CONCAT: run_concat(m, node, scratch); break;
      case QDARTS_GRAPH_MAX_POOL: run_pool(m, node, scratch, 1); break;
      case QDARTS_GRAPH_AVG_POOL: run_pool(m, node, scratch, 0); break;
      case QDARTS_GRAPH_GLOBAL_AVG_POOL: run_global_avg_pool(m, node, scratch); break;
      default: run_linear(m, node, scratch, accumulators); return QDARTS_OK;
    }
    if (trace) {
      const qdarts_graph_tensor *y = &m->tensors[node->output];
      memcpy(trace + trace_offset, scratch + y->offset, tensor_bytes(y));
      trace_offset += tensor_bytes(y);
    }
  }
  return QDARTS_OK;
}

void qdarts_graph_logits(const qdarts_graph_model *m, const int32_t *accumulators,
                         float *logits) {
  int32_t c;
  for (c = 0; c < m->num_classes; ++c) {
    logits[c] = (float)((double)accumulators[c] * (double)m->logit_scale[c]);
  }
}
