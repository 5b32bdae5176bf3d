/* A host driver for an exported qdarts model: batch inference from files.
 *
 *   qdarts_run INPUT OUTPUT [TRACE [TIMES]]
 *
 * INPUT holds N samples of model input codes (uint8, NHWC, input_bytes each; N is the file
 * size divided by input_bytes). OUTPUT receives per sample num_classes int32 accumulators
 * then num_classes float32 logits, little-endian. TRACE, if given, receives per sample the
 * trace_bytes output codes of every non-final layer. TIMES, if given, receives per sample the
 * seconds qdarts_infer took (a little-endian IEEE double; a monotonic wall clock where POSIX
 * offers one, else clock()). Exit status 0 on success, 1 on a usage or
 * I/O error, 2 + the qdarts_infer status on an inference error.
 *
 * Build with the model and the runtime, naming the model symbol if it is not qdarts_net:
 *   cc -std=c99 -O2 -DQDARTS_RUN_MODEL=kws_net model.c qdarts_infer.c qdarts_run.c
 * and for a DAG export, with its runtime too:
 *   cc -std=c99 -O2 -DQDARTS_RUN_GRAPH model.c qdarts_graph.c qdarts_infer.c qdarts_run.c */
#define _POSIX_C_SOURCE 199309L /* clock_gettime, for TIMES; the runtime itself is plain C99 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#ifdef QDARTS_RUN_GRAPH /* a DAG export (qdarts.export.graph_c): the same files in and out */
#include "qdarts_graph.h"
typedef qdarts_graph_model qdarts_run_model;
#define QDARTS_RUN_INFER qdarts_graph_infer
#define QDARTS_RUN_LOGITS qdarts_graph_logits
#else
#include "qdarts_infer.h"
typedef qdarts_model qdarts_run_model;
#define QDARTS_RUN_INFER qdarts_infer
#define QDARTS_RUN_LOGITS qdarts_logits
#endif

#ifndef QDARTS_RUN_MODEL
#define QDARTS_RUN_MODEL qdarts_net
#endif

static void put_u32_le(unsigned char *out, uint32_t v) {
  out[0] = (unsigned char)(v & 0xFF);
  out[1] = (unsigned char)((v >> 8) & 0xFF);
  out[2] = (unsigned char)((v >> 16) & 0xFF);
  out[3] = (unsigned char)((v >> 24) & 0xFF);
}

static double now_seconds(void) {
#if defined(CLOCK_MONOTONIC)
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (double)ts.tv_sec + 1e-9 * ts.tv_nsec;
#endif
  return (double)clock() / CLOCKS_PER_SEC;
}

static int write_double(FILE *f, double v) {
  unsigned char bytes[8];
  uint64_t bits;
  int i;
  memcpy(&bits, &v, 8);
  for (i = 0; i < 8; ++i) bytes[i] = (unsigned char)((bits >> (8 * i)) & 0xFF);
  return fwrite(bytes, 1, 8, f) != 8;
}

static int write_outputs(FILE *f, const int32_t *acc, const float *logits, int32_t n) {
  unsigned char bytes[4];
  uint32_t bits;
  int32_t c;
  for (c = 0; c < n; ++c) {
    put_u32_le(bytes, (uint32_t)acc[c]);
    if (fwrite(bytes, 1, 4, f) != 4) return 1;
  }
  for (c = 0; c < n; ++c) {
    memcpy(&bits, &logits[c], 4);
    put_u32_le(bytes, bits);
    if (fwrite(bytes, 1, 4, f) != 4) return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const qdarts_run_model *model = &QDARTS_RUN_MODEL;
  FILE *in, *out, *trace_file = NULL, *times_file = NULL;
  uint8_t *input, *scratch, *trace;
  int32_t *acc;
  float *logits;
  int status = 0;
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: %s INPUT OUTPUT [TRACE [TIMES]]\n", argv[0]);
    return 1;
  }
  in = fopen(argv[1], "rb");
  out = fopen(argv[2], "wb");
  if (argc >= 4) trace_file = fopen(argv[3], "wb");
  if (argc == 5) times_file = fopen(argv[4], "wb");
  input = malloc(model->input_bytes);
  scratch = malloc(model->scratch_bytes);
  trace = malloc(model->trace_bytes > 0 ? model->trace_bytes : 1);
  acc = malloc(sizeof(int32_t) * (size_t)model->num_classes);
  logits = malloc(sizeof(float) * (size_t)model->num_classes);
  if (!in || !out || (argc >= 4 && !trace_file) || (argc == 5 && !times_file) || !input || !scratch || !trace || !acc ||
      !logits) {
    fprintf(stderr, "qdarts_run: cannot open the files or allocate buffers\n");
    return 1;
  }
  for (;;) {
    size_t got = fread(input, 1, model->input_bytes, in);
    int rc;
    double start;
    if (got == 0) break;
    if (got != model->input_bytes) {
      fprintf(stderr, "qdarts_run: input size is not a multiple of %lu bytes\n",
              (unsigned long)model->input_bytes);
      status = 1;
      break;
    }
    start = now_seconds();
    rc = QDARTS_RUN_INFER(model, input, scratch, acc, trace_file ? trace : NULL);
    if (times_file && write_double(times_file, now_seconds() - start)) {
      fprintf(stderr, "qdarts_run: write failed\n");
      status = 1;
      break;
    }
    if (rc != QDARTS_OK) {
      fprintf(stderr, "qdarts_run: qdarts_infer failed with status %d\n", rc);
      status = 2 + rc;
      break;
    }
    QDARTS_RUN_LOGITS(model, acc, logits);
    if (write_outputs(out, acc, logits, model->num_classes) ||
        (trace_file && fwrite(trace, 1, model->trace_bytes, trace_file) != model->trace_bytes)) {
      fprintf(stderr, "qdarts_run: write failed\n");
      status = 1;
      break;
    }
  }
  fclose(in);
  if (fclose(out) != 0) status = status ? status : 1;
  if (trace_file && fclose(trace_file) != 0) status = status ? status : 1;
  if (times_file && fclose(times_file) != 0) status = status ? status : 1;
  free(input);
  free(scratch);
  free(trace);
  free(acc);
  free(logits);
  return status;
}
