/* Every kind of bad input through the C ABI is an error code with a message, never a crash:
 * NULL pointers, buffers that do not fit the shape, a model file that does not load, a backend
 * that is not there, destroyed and made-up handles, labels out of range, and two threads on one
 * model at once (serialised: both get the serial result). Exit 0 when every check holds.
 *
 *   bad_input MODEL.safetensors NOT_A_MODEL_FILE
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perturb.h"

static int failures = 0;

static void expect(const char *what, PerturbStatus got, PerturbStatus want, const char *needle) {
  const char *msg = perturb_last_error();
  int ok = got == want;
  if (ok && want != PERTURB_STATUS_OK && (msg == NULL || (needle && strstr(msg, needle) == NULL))) ok = 0;
  printf("%s %-44s status %d%s%s\n", ok ? "ok  " : "FAIL", what, (int)got, msg && want ? ": " : "", msg && want ? msg : "");
  if (!ok) {
    failures++;
    if (got != want) printf("     expected status %d\n", (int)want);
    if (needle) printf("     expected the message to contain '%s'\n", needle);
  }
}

typedef struct {
  PerturbModel *model;
  const float *x;
  size_t x_len, n, classes;
  float *logits;
  PerturbStatus status;
} Job;

static void *forward_many(void *p) {
  Job *j = p;
  for (int r = 0; r < 20 && j->status == PERTURB_STATUS_OK; r++)
    j->status = perturb_model_forward(j->model, j->x, j->x_len, j->n, j->logits, j->n * j->classes);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL NOT_A_MODEL\n", argv[0]);
    return 2;
  }
  PerturbBackend *b = NULL;
  PerturbModel *m = NULL;
  expect("version is set", perturb_version() && *perturb_version() ? PERTURB_STATUS_OK : PERTURB_STATUS_INTERNAL,
         PERTURB_STATUS_OK, NULL);
  expect("open: NULL kind", perturb_backend_open(NULL, 0, &b), PERTURB_STATUS_NULL_POINTER, "kind");
  expect("open: NULL out", perturb_backend_open("cpu", 0, NULL), PERTURB_STATUS_NULL_POINTER, "out");
  expect("open: unknown backend", perturb_backend_open("tpu", 0, &b), PERTURB_STATUS_INVALID_ARGUMENT, "tpu");
  PerturbStatus cuda = perturb_backend_open("cuda", 0, &b);
  if (cuda == PERTURB_STATUS_OK) {
    expect("open: cuda (present here)", perturb_backend_destroy(&b), PERTURB_STATUS_OK, NULL);
  } else {
    expect("open: cuda absent -> unavailable, with why", cuda, PERTURB_STATUS_UNAVAILABLE, "cuda");
    expect("open: failed call leaves out NULL", b == NULL ? PERTURB_STATUS_OK : PERTURB_STATUS_INTERNAL,
           PERTURB_STATUS_OK, NULL);
  }
  expect("open: cpu", perturb_backend_open("cpu", 2, &b), PERTURB_STATUS_OK, NULL);

  expect("load: NULL path", perturb_model_load(b, NULL, &m), PERTURB_STATUS_NULL_POINTER, "path");
  expect("load: missing file", perturb_model_load(b, "/nonexistent/m.safetensors", &m), PERTURB_STATUS_MODEL,
         "nonexistent");
  expect("load: not a model file", perturb_model_load(b, argv[2], &m), PERTURB_STATUS_MODEL, NULL);
  expect("load: NULL backend", perturb_model_load(NULL, argv[1], &m), PERTURB_STATUS_NULL_POINTER, "PerturbBackend");
  expect("load: made-up backend handle", perturb_model_load((PerturbBackend *)(uintptr_t)0x7770, argv[1], &m),
         PERTURB_STATUS_INVALID_HANDLE, "not a live handle");
  expect("load", perturb_model_load(b, argv[1], &m), PERTURB_STATUS_OK, NULL);
  expect("load: a model handle as a backend", perturb_model_load((PerturbBackend *)m, argv[1], &m),
         PERTURB_STATUS_INVALID_HANDLE, "PerturbModel");
  expect("  ... and out was cleared", m == NULL ? PERTURB_STATUS_OK : PERTURB_STATUS_INTERNAL, PERTURB_STATUS_OK, NULL);
  expect("load again", perturb_model_load(b, argv[1], &m), PERTURB_STATUS_OK, NULL);

  PerturbModelShape s;
  expect("shape", perturb_model_shape(m, &s), PERTURB_STATUS_OK, NULL);
  size_t per = s.channels * s.height * s.width, n = 8;
  float *x = calloc(n * per, sizeof(float)), *adv = calloc(n * per, sizeof(float));
  float *logits = calloc(n * s.classes, sizeof(float)), *logits2 = NULL;
  uint32_t *y = calloc(n, sizeof(uint32_t));
  expect("digits", perturb_mnist10k(PERTURB_SPLIT_TEST, 0, n, x, n * per, y, n), PERTURB_STATUS_OK, NULL);
  expect("digits: no such split", perturb_mnist10k(7, 0, n, x, n * per, y, n), PERTURB_STATUS_INVALID_ARGUMENT, "PerturbSplit");
  expect("digits: past the end", perturb_mnist10k(PERTURB_SPLIT_TEST, 1999, n, x, n * per, y, n),
         PERTURB_STATUS_INVALID_ARGUMENT, "past");

  expect("forward: NULL x", perturb_model_forward(m, NULL, n * per, n, logits, n * s.classes),
         PERTURB_STATUS_NULL_POINTER, "x");
  expect("forward: x one short", perturb_model_forward(m, x, n * per - 1, n, logits, n * s.classes),
         PERTURB_STATUS_LENGTH, "expected");
  expect("forward: logits one short", perturb_model_forward(m, x, n * per, n, logits, n * s.classes - 1),
         PERTURB_STATUS_LENGTH, "logits");
  expect("forward: n = 0", perturb_model_forward(m, x, 0, 0, logits, 0), PERTURB_STATUS_INVALID_ARGUMENT, "n");
  expect("forward: misaligned x", perturb_model_forward(m, (const float *)((const char *)x + 1), n * per, n, logits,
         n * s.classes), PERTURB_STATUS_INVALID_ARGUMENT, "aligned");
  expect("forward", perturb_model_forward(m, x, n * per, n, logits, n * s.classes), PERTURB_STATUS_OK, NULL);

  uint32_t bad = y[3];
  y[3] = 10;
  expect("attack: label out of range", perturb_attack(m, "fgsm", NULL, x, n * per, y, n, adv, n * per, NULL),
         PERTURB_STATUS_INVALID_ARGUMENT, "labels[3]");
  y[3] = bad;
  expect("attack: unknown name", perturb_attack(m, "deepfool", NULL, x, n * per, y, n, adv, n * per, NULL),
         PERTURB_STATUS_INVALID_ARGUMENT, "deepfool");
  PerturbAttackOptions o;
  perturb_attack_options_default(&o);
  o.eps = -1.0f;
  expect("attack: eps < 0", perturb_attack(m, "pgd", &o, x, n * per, y, n, adv, n * per, NULL),
         PERTURB_STATUS_INVALID_ARGUMENT, "eps");
  expect("attack: adv short", perturb_attack(m, "fgsm", NULL, x, n * per, y, n, adv, 3, NULL), PERTURB_STATUS_LENGTH,
         "adv");
  expect("attack: NULL labels", perturb_attack(m, "fgsm", NULL, x, n * per, NULL, n, adv, n * per, NULL),
         PERTURB_STATUS_NULL_POINTER, "labels");
  expect("grad: grad short", perturb_model_input_grad(m, x, n * per, y, n, adv, n * per - 1, NULL),
         PERTURB_STATUS_LENGTH, "grad");

  PerturbTrainerOptions to;
  perturb_trainer_options_default(&to);
  PerturbTrainer *t = NULL;
  to.method = "madry";
  expect("trainer: unknown method", perturb_trainer_create(m, &to, &t), PERTURB_STATUS_INVALID_ARGUMENT, "madry");
  to.method = NULL;
  expect("trainer: NULL method", perturb_trainer_create(m, &to, &t), PERTURB_STATUS_NULL_POINTER, "method");
  to.method = "fgsm";
  expect("trainer", perturb_trainer_create(m, &to, &t), PERTURB_STATUS_OK, NULL);
  expect("step: lr = 0", perturb_trainer_step(t, x, n * per, y, n, 0.0f, NULL), PERTURB_STATUS_INVALID_ARGUMENT, "lr");
  PerturbStatus st = PERTURB_STATUS_OK;
  for (int k = 0; k < 3 && st == PERTURB_STATUS_OK; k++) st = perturb_trainer_step(t, x, n * per, y, n, 1e30f, NULL);
  expect("step: lr = 1e30 diverges", st, PERTURB_STATUS_DIVERGED, "non-finite");
  expect("trainer destroy", perturb_trainer_destroy(&t), PERTURB_STATUS_OK, NULL);
  /* The weights are ruined now: load the file again. */
  expect("model destroy", perturb_model_destroy(&m), PERTURB_STATUS_OK, NULL);
  expect("load after divergence", perturb_model_load(b, argv[1], &m), PERTURB_STATUS_OK, NULL);

  /* Two threads on one model: calls are serialised, and each gets the serial result. */
  Job jobs[2];
  pthread_t th[2];
  float *out[2] = {calloc(n * s.classes, sizeof(float)), calloc(n * s.classes, sizeof(float))};
  for (int i = 0; i < 2; i++) {
    jobs[i] = (Job){m, x, n * per, n, s.classes, out[i], PERTURB_STATUS_OK};
    pthread_create(&th[i], NULL, forward_many, &jobs[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  int same = jobs[0].status == PERTURB_STATUS_OK && jobs[1].status == PERTURB_STATUS_OK &&
             memcmp(out[0], logits, n * s.classes * sizeof(float)) == 0 &&
             memcmp(out[1], logits, n * s.classes * sizeof(float)) == 0;
  expect("two threads, one model: serial results", same ? PERTURB_STATUS_OK : PERTURB_STATUS_INTERNAL,
         PERTURB_STATUS_OK, NULL);

  PerturbModel *stale = m;
  expect("model destroy", perturb_model_destroy(&m), PERTURB_STATUS_OK, NULL);
  expect("  ... sets the pointer to NULL", m == NULL ? PERTURB_STATUS_OK : PERTURB_STATUS_INTERNAL, PERTURB_STATUS_OK,
         NULL);
  expect("model destroy again (NULL): no-op", perturb_model_destroy(&m), PERTURB_STATUS_OK, NULL);
  expect("forward on a destroyed model", perturb_model_forward(stale, x, n * per, n, logits, n * s.classes),
         PERTURB_STATUS_INVALID_HANDLE, "not a live handle");
  expect("destroy a stale copy", perturb_model_destroy(&stale), PERTURB_STATUS_INVALID_HANDLE, "destroyed");
  expect("destroy NULL", perturb_backend_destroy(NULL), PERTURB_STATUS_OK, NULL);
  expect("backend destroy", perturb_backend_destroy(&b), PERTURB_STATUS_OK, NULL);
  free(x), free(adv), free(logits), free(logits2), free(y), free(out[0]), free(out[1]);
  printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
