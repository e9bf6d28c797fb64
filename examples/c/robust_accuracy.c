/* Loads a model, attacks the first N held-out MNIST-10k digits with PGD (perturb eval's
 * defaults: eps 0.3, 40 steps of 0.01) and prints clean and robust accuracy.
 *
 *   cc robust_accuracy.c -I crates/perturb-capi/include -L target/release -lperturb_capi -o robust_accuracy
 *   LD_LIBRARY_PATH=target/release ./robust_accuracy MODEL.safetensors [N] [ATTACK]
 */
#include <stdio.h>
#include <stdlib.h>

#include "perturb.h"

#define CHECK(call)                                                               \
  do {                                                                            \
    PerturbStatus s_ = (call);                                                    \
    if (s_ != PERTURB_STATUS_OK) {                                                \
      fprintf(stderr, "error %d: %s\n", (int)s_, perturb_last_error());           \
      return 1;                                                                   \
    }                                                                             \
  } while (0)

static size_t correct(PerturbModel *m, const float *x, size_t x_len, const uint32_t *y, size_t n,
                      size_t classes, float *logits) {
  if (perturb_model_forward(m, x, x_len, n, logits, n * classes) != PERTURB_STATUS_OK) return (size_t)-1;
  size_t ok = 0;
  for (size_t i = 0; i < n; i++) {
    size_t best = 0;
    for (size_t k = 1; k < classes; k++)
      if (logits[i * classes + k] > logits[i * classes + best]) best = k;
    ok += best == y[i];
  }
  return ok;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL [N] [ATTACK]\n", argv[0]);
    return 2;
  }
  size_t n = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 500;
  const char *attack = argc > 3 ? argv[3] : "pgd";

  PerturbBackend *backend = NULL;
  PerturbModel *model = NULL;
  CHECK(perturb_backend_open("cpu", 0, &backend));
  CHECK(perturb_model_load(backend, argv[1], &model));
  PerturbModelShape shape;
  CHECK(perturb_model_shape(model, &shape));
  size_t per = shape.channels * shape.height * shape.width;

  float *x = malloc(n * per * sizeof(float)), *adv = malloc(n * per * sizeof(float));
  float *logits = malloc(n * shape.classes * sizeof(float));
  uint32_t *y = malloc(n * sizeof(uint32_t));
  if (!x || !adv || !logits || !y) return 1;
  CHECK(perturb_mnist10k(PERTURB_SPLIT_TEST, 0, n, x, n * per, y, n));

  PerturbAttackOptions opts;
  CHECK(perturb_attack_options_default(&opts));
  size_t n_correct = 0;
  CHECK(perturb_attack(model, attack, &opts, x, n * per, y, n, adv, n * per, &n_correct));

  size_t clean = correct(model, x, n * per, y, n, shape.classes, logits);
  size_t robust = correct(model, adv, n * per, y, n, shape.classes, logits);
  if (robust != n_correct) {
    fprintf(stderr, "forward on the adversarial images says %zu correct, the attack %zu\n", robust, n_correct);
    return 1;
  }
  float max_dist = 0;
  for (size_t i = 0; i < n * per; i++) {
    float d = adv[i] > x[i] ? adv[i] - x[i] : x[i] - adv[i];
    if (d > max_dist) max_dist = d;
  }
  printf("perturb %s, %zu digits: clean %zu (%.2f%%), %s %zu (%.2f%%), max |adv - x| %.4f\n",
         perturb_version(), n, clean, 100.0 * clean / n, attack, robust, 100.0 * robust / n, max_dist);
  /* The exact figure, for comparing with `perturb eval --json`. */
  printf("robust_accuracy %.17g\n", (double)robust / (double)n);

  CHECK(perturb_model_destroy(&model));
  CHECK(perturb_backend_destroy(&backend));
  free(x), free(adv), free(logits), free(y);
  return model == NULL && backend == NULL ? 0 : 1;
}
