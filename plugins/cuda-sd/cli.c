/* cli.c - `horde-node sd txt2img|img2img|inpaint|tokenize|info`.
 *
 * A user interface: messages go to stdout/stderr, exit status 0 on success,
 * 1 when the work failed, 2 for a usage error. Flags take "--flag VALUE" or
 * "--flag=VALUE". */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_sd.h"
#include "backend/backend_choice.h"
#include "engine/family.h"
#include "engine/model_file.h"
#include "engine/tokenizer.h"
#include "engine/vae_decode.h"

const char cuda_sd_cli_usage[] =
    "txt2img|img2img|inpaint|tokenize|info ...   Stable Diffusion on this machine "
    "(horde-node sd help)";

static void help(FILE *out)
{
    fprintf(out,
            "usage:\n"
            "  horde-node sd txt2img --model FILE --prompt TEXT -o OUT.png [options]\n"
            "  horde-node sd img2img --model FILE --prompt TEXT --init IMAGE [--denoise F] "
            "-o OUT.png [options]\n"
            "  horde-node sd inpaint --model FILE --prompt TEXT --init IMAGE [--mask IMAGE] "
            "-o OUT.png [options]\n"
            "  horde-node sd tokenize [--family sd1|sd2] [--vocab FILE] TEXT\n"
            "  horde-node sd info --model FILE [--backend cpu|cuda|auto]\n"
            "options:\n"
            "  --negative TEXT       negative prompt (default empty)\n"
            "  --seed N              seed; any text is taken as the horde takes it "
            "(default random)\n"
            "  --steps N             sampler steps (default 30)\n"
            "  --cfg F               classifier-free guidance scale (default 7.5)\n"
            "  --sampler NAME        k_euler, k_euler_a (default), k_heun, k_dpm_2, k_dpm_2_a,\n"
            "                        k_lms, k_dpmpp_2m, k_dpmpp_2s_a, k_dpmpp_sde, k_dpm_fast,\n"
            "                        k_dpm_adaptive, dpmsolver, lcm, DDIM\n"
            "  --karras, --no-karras karras or normal sigma schedule (default karras)\n"
            "  --width W, --height H image size, multiples of 8 (default 512)\n"
            "  --clip-skip N         1 = last text-encoder layer (default: the model's)\n"
            "  --n N                 images from one batch; OUT gets -1, -2, ... before "
            "its extension\n"
            "  --conventions C       comfyui (default, as horde workers) or kdiffusion\n"
            "  --denoise F           img2img/inpaint strength, 0 < F <= 1 (default 0.75 for\n"
            "                        img2img, 1.0 for inpaint)\n"
            "  --mask IMAGE          white = repaint (default: transparent pixels of --init)\n"
            "  --tiling              seamless tiling (circular padding)\n"
            "  --hires-fix [--hires-denoise F]  two passes, as the horde's hires_fix\n"
            "  --vocab FILE          CLIP vocabulary (default: beside the model, else\n"
            "                        <data>/models/clip/bpe_simple_vocab_16e6.txt.gz)\n"
            "  --config FILE         model sidecar config (.json/.yaml; default: beside the "
            "model)\n"
            "  --threads N           CPU threads (default: config, else one per core)\n"
            "  --backend B           cpu, cuda or auto (default: config, else auto = cuda\n"
            "                        when a usable GPU is found, else cpu)\n"
            "  -o, --output OUT      .png or .webp\n");
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("horde-node sd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see horde-node sd help)\n", stderr);
    va_end(ap);
    return 2;
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]; advances *i over a separate
 * value. Returns 1 matched, 0 not this flag, -1 value missing. */
static int flag_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* ---- progress bar ----------------------------------------------------------- */

typedef struct progress {
    bool tty;
    struct timespec start;
    int last_total;
} progress;

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) * 1e-9;
}

static void on_progress(void *ud, int step, int total)
{
    progress *p = ud;
    p->last_total = total;
    if (!p->tty)
        return;
    const int width = 30;
    int filled = total > 0 ? step * width / total : 0;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    double el = seconds_since(&p->start);
    fprintf(stderr, "\r[%s] %d/%d  %.1f s/step ", bar, step, total, step > 0 ? el / step : 0.0);
    fflush(stderr);
}

/* ---- generation ------------------------------------------------------------- */

/* OUT for image i of n: "dir/name.png" -> "dir/name-3.png" when n > 1. */
static void output_name(const char *out, int i, int n, char *buf, size_t len)
{
    if (n <= 1) {
        snprintf(buf, len, "%s", out);
        return;
    }
    const char *slash = strrchr(out, '/');
    const char *dot = strrchr(out, '.');
    if (!dot || (slash && dot < slash))
        snprintf(buf, len, "%s-%d", out, i + 1);
    else
        snprintf(buf, len, "%.*s-%d%s", (int)(dot - out), out, i + 1, dot);
}

/* The plugin config's CUDA and VAE-tile switches, as the generator provider
 * gives them to its model cache (provider.c), so `horde-node sd` makes
 * images the way the node does. No config: the schema's defaults. */
static void cuda_sd_pipeline_switches(const cuda_sd_conf *c, sd_pipeline_opts *po)
{
    po->offload = c ? (int)c->cuda_offload : SD_OFFLOAD_ENCODERS;
    po->cuda_graphs = c ? c->cuda_graphs : true;
    po->cuda_conv_implicit = c ? c->cuda_conv_implicit : false;
    po->cuda_f16_activations = c ? c->cuda_f16_activations : true;
    po->cuda_vae_bf16 = c ? c->cuda_vae_bf16 : false;
    po->vae_tile = c ? (int)(c->vae_tile_px / 8) : 0;   /* image -> latent pixels */
    po->vae_tile_above = c ? c->vae_tile_above_pixels : 0;
}

static int cmd_generate(cuda_sd *sd, sd_job_kind kind, const char *cmd, int argc, char **argv)
{
    sd_job job;
    sd_job_init(&job);
    job.kind = kind;
    job.conventions = sd->conventions;
    job.denoise = kind == SD_JOB_IMG2IMG ? 0.75 : 1.0;
    const char *model = NULL, *out = NULL, *init_path = NULL, *mask_path = NULL;
    const char *vocab = sd->conf ? sd->conf->vocab : NULL, *config = NULL, *seed_text = NULL;
    int threads = sd->conf ? (int)sd->conf->threads : 0;
    const char *backend = sd->conf && sd->conf->backend ? sd->conf->backend : "auto";

    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        int m = 0;
        const char *a = argv[i];
#define FLAG(name) ((m = flag_value(argc, argv, &i, name, &v)) != 0)
        if (FLAG("--model")) {
            model = v;
        } else if (FLAG("--prompt")) {
            job.prompt = v;
        } else if (FLAG("--negative")) {
            job.negative = v;
        } else if (FLAG("--seed")) {
            seed_text = v;
        } else if (FLAG("--steps")) {
            if (m > 0 && parse_int(v, 1, 1000, &job.steps) != 0)
                return usage_error("--steps: \"%s\" is not a whole number in 1..1000", v);
        } else if (FLAG("--cfg")) {
            double c;
            if (m > 0 && parse_double(v, 0.0, 100.0, &c) != 0)
                return usage_error("--cfg: \"%s\" is not a number in 0..100", v);
            job.cfg_scale = (float)c;
        } else if (FLAG("--sampler")) {
            if (m > 0 && sd_sampler_from_name(v, &job.sampler) != 0)
                return usage_error("--sampler: unknown sampler \"%s\"", v);
        } else if (strcmp(a, "--karras") == 0) {
            job.scheduler = SD_SCHED_KARRAS;
        } else if (strcmp(a, "--no-karras") == 0) {
            job.scheduler = SD_SCHED_NORMAL;
        } else if (FLAG("--width")) {
            if (m > 0 && parse_int(v, 64, 8192, &job.width) != 0)
                return usage_error("--width: \"%s\" is not a size in 64..8192", v);
        } else if (FLAG("--height")) {
            if (m > 0 && parse_int(v, 64, 8192, &job.height) != 0)
                return usage_error("--height: \"%s\" is not a size in 64..8192", v);
        } else if (FLAG("--clip-skip")) {
            if (m > 0 && parse_int(v, 1, 24, &job.clip_skip) != 0)
                return usage_error("--clip-skip: \"%s\" is not in 1..24", v);
        } else if (FLAG("--n")) {
            if (m > 0 && parse_int(v, 1, 100, &job.n_images) != 0)
                return usage_error("--n: \"%s\" is not in 1..100", v);
        } else if (FLAG("--conventions")) {
            if (m > 0 && sd_conventions_parse(v, &job.conventions) != 0)
                return usage_error("--conventions: \"%s\" is not comfyui or kdiffusion", v);
        } else if (FLAG("--vocab")) {
            vocab = v;
        } else if (FLAG("--config")) {
            config = v;
        } else if (FLAG("--backend")) {
            if (m > 0 && strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0 && strcmp(v, "auto") != 0)
                return usage_error("--backend: \"%s\" is not cpu, cuda or auto", v);
            backend = v;
        } else if (FLAG("--threads")) {
            if (m > 0 && parse_int(v, 0, 1024, &threads) != 0)
                return usage_error("--threads: \"%s\" is not in 0..1024", v);
        } else if (FLAG("--init")) {
            if (kind == SD_JOB_TXT2IMG)
                return usage_error("--init is for img2img and inpaint");
            init_path = v;
        } else if (FLAG("--mask")) {
            if (kind != SD_JOB_INPAINT)
                return usage_error("--mask is for inpaint");
            mask_path = v;
        } else if (FLAG("--denoise")) {
            if (kind == SD_JOB_TXT2IMG)
                return usage_error("--denoise is for img2img and inpaint");
            if (m > 0 && parse_double(v, 1e-6, 1.0, &job.denoise) != 0)
                return usage_error("--denoise: \"%s\" is not in (0, 1]", v);
        } else if (strcmp(a, "--tiling") == 0) {
            job.tiling = true;
        } else if (strcmp(a, "--hires-fix") == 0) {
            job.hires_fix = true;
        } else if (FLAG("--hires-denoise")) {
            if (m > 0 && parse_double(v, 0.01, 1.0, &job.hires_denoise) != 0)
                return usage_error("--hires-denoise: \"%s\" is not in 0.01..1", v);
        } else if (FLAG("-o") || FLAG("--output")) {
            out = v;
        } else {
            return usage_error("unknown option \"%s\" for %s", a, cmd);
        }
        if (m < 0)
            return usage_error("%s needs a value", a);
#undef FLAG
    }
    if (!model)
        return usage_error("--model FILE is required");
    if (!job.prompt)
        return usage_error("--prompt TEXT is required");
    if (!out)
        return usage_error("-o OUT.png is required");
    if (sd_image_format_from_path(out) == SD_IMAGE_UNKNOWN)
        return usage_error("-o %s: the name must end in .png or .webp", out);
    if (job.width % 8 || job.height % 8)
        return usage_error("--width and --height must be multiples of 8");
    if (kind != SD_JOB_TXT2IMG && !init_path)
        return usage_error("--init IMAGE is required");
    job.seed = cuda_sd_seed(seed_text);
    if (!seed_text)
        fprintf(stderr, "seed: %llu\n", (unsigned long long)job.seed);

    char err[1024];
    sd_image init = {0}, mask = {0};
    if (init_path && sd_image_load(init_path, 0, &init, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        return 1;
    }
    if (mask_path && sd_image_load(mask_path, 1, &mask, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        sd_image_free(&init);
        return 1;
    }
    job.init = init_path ? &init : NULL;
    job.mask = mask_path ? &mask : NULL;

    sd_pipeline_opts po = {.model_path = model,
                           .vocab_path = vocab,
                           .data_dir = sd->data_dir[0] ? sd->data_dir : NULL,
                           .config_path = config,
                           .threads = threads,
                           .backend = backend};
    cuda_sd_pipeline_switches(sd->conf, &po);
    sd_pipeline *pipe = NULL;
    int status = 1;
    sd_image *images = NULL;
    if (sd_pipeline_load(&po, &pipe, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        goto out;
    }
    char how[600];
    sd_pipeline_backend_describe(pipe, how, sizeof how);
    fprintf(stderr, "backend: %s\n", how);
    images = calloc((size_t)job.n_images, sizeof *images);
    if (!images) {
        fprintf(stderr, "horde-node sd: out of memory\n");
        goto out;
    }
    progress prog = {.tty = isatty(STDERR_FILENO) == 1};
    clock_gettime(CLOCK_MONOTONIC, &prog.start);
    job.progress = on_progress;
    job.progress_ud = &prog;
    int rc = sd_generate(pipe, &job, images, err, sizeof err);
    if (prog.tty)
        fputc('\n', stderr);
    if (rc != 0) {
        fprintf(stderr, "horde-node sd: %s\n", rc == SD_CANCELLED ? "cancelled" : err);
        goto out;
    }
    const sd_vae_decode_info *dec = sd_pipeline_last_decode(pipe);
    if (dec && dec->tiles > 0)
        fprintf(stderr, "vae: decoded in %d tiles (%s)\n", dec->tiles,
                dec->why_tiled ? dec->why_tiled : "out of memory");
    status = 0;
    for (int i = 0; i < job.n_images; i++) {
        char path[4096];
        output_name(out, i, job.n_images, path, sizeof path);
        if (sd_image_save(path, &images[i], 95.0f, err, sizeof err) != 0) {
            fprintf(stderr, "horde-node sd: %s\n", err);
            status = 1;
        } else {
            printf("%s\n", path);
        }
    }
out:
    if (images)
        for (int i = 0; i < job.n_images; i++)
            sd_image_free(&images[i]);
    free(images);
    sd_pipeline_free(pipe);
    sd_image_free(&init);
    sd_image_free(&mask);
    return status;
}

/* ---- tokenize, info ------------------------------------------------------------ */

static int cmd_tokenize(cuda_sd *sd, int argc, char **argv)
{
    sd_token_form form = SD_TOKENS_SD1;
    const char *vocab = sd->conf ? sd->conf->vocab : NULL;
    char text[8192] = "";
    size_t tl = 0;
    bool have_text = false;
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        int m;
        if ((m = flag_value(argc, argv, &i, "--family", &v)) != 0) {
            if (m < 0)
                return usage_error("--family needs a value");
            if (strcmp(v, "sd1") == 0)
                form = SD_TOKENS_SD1;
            else if (strcmp(v, "sd2") == 0)
                form = SD_TOKENS_SD2;
            else
                return usage_error("--family: \"%s\" is not sd1 or sd2", v);
        } else if ((m = flag_value(argc, argv, &i, "--vocab", &v)) != 0) {
            if (m < 0)
                return usage_error("--vocab needs a value");
            vocab = v;
        } else if (strcmp(argv[i], "--") == 0) {
            for (i++; i < argc; i++) {
                tl += (size_t)snprintf(text + tl, sizeof text - tl, "%s%s", have_text ? " " : "",
                                       argv[i]);
                have_text = true;
            }
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return usage_error("unknown option \"%s\" for tokenize", argv[i]);
        } else {
            /* words after the options make up the text, joined by spaces */
            tl += (size_t)snprintf(text + tl, sizeof text - tl, "%s%s", have_text ? " " : "",
                                   argv[i]);
            have_text = true;
        }
        if (tl >= sizeof text)
            return usage_error("TEXT is too long");
    }
    if (!have_text)
        return usage_error("tokenize needs TEXT");
    char path[4096], err[1024];
    if (sd_tokenizer_find_vocab(vocab, NULL, sd->data_dir[0] ? sd->data_dir : NULL, path,
                                sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        return 1;
    }
    sd_tokenizer *tok = NULL;
    if (sd_tokenizer_load(path, &tok, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        return 1;
    }
    int ids[SD_TOKEN_CONTEXT];
    int rc = sd_tokenize_77(tok, text, form, ids, NULL, NULL, err, sizeof err);
    sd_tokenizer_free(tok);
    if (rc != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        return 1;
    }
    char json[1024];
    sd_token_ids_json(ids, SD_TOKEN_CONTEXT, json, sizeof json);
    printf("%s\n", json);
    return 0;
}

static int cmd_info(cuda_sd *sd, int argc, char **argv)
{
    const char *model = NULL, *config = NULL;
    const char *backend = sd->conf && sd->conf->backend ? sd->conf->backend : "auto";
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        int m;
        if ((m = flag_value(argc, argv, &i, "--model", &v)) != 0)
            model = v;
        else if ((m = flag_value(argc, argv, &i, "--config", &v)) != 0)
            config = v;
        else if ((m = flag_value(argc, argv, &i, "--backend", &v)) != 0)
            backend = v;
        else
            return usage_error("unknown option \"%s\" for info", argv[i]);
        if (m < 0)
            return usage_error("%s needs a value", argv[i]);
    }
    if (!model)
        return usage_error("--model FILE is required");
    char err[1024];
    sd_model_file *f = NULL;
    if (sd_model_file_open(model, &f, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        return 1;
    }
    sd_family_info info;
    if (sd_family_detect_with_config(f, config, &info, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: %s\n", err);
        sd_model_file_close(f);
        return 1;
    }
    size_t need = sd_family_describe(f, &info, NULL, 0);
    char *text = malloc(need + 1);
    if (!text) {
        sd_model_file_close(f);
        fprintf(stderr, "horde-node sd: out of memory\n");
        return 1;
    }
    sd_family_describe(f, &info, text, need + 1);
    fputs(text, stdout);
    if (need == 0 || text[need - 1] != '\n')
        fputc('\n', stdout);
    free(text);
    int status = 0;
    /* the backend a generation with these options would run on */
    sd_backend_choice choice;
    char how[600];
    if (sd_backend_choose(backend, &choice, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node sd: --backend: %s\n", err);
        status = 2;
    } else {
        sd_backend_choice_describe(&choice, how, sizeof how);
        printf("backend: %s\n", how);
    }
    if (!info.supported) {
        sd_family_check_supported(f, &info, err, sizeof err);
        fprintf(stderr, "horde-node sd: %s\n", err);
    }
    sd_model_file_close(f);
    return status;
}

int cuda_sd_cli(int argc, char **argv, void *state)
{
    cuda_sd *sd = state;
    if (argc < 2) {
        help(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "txt2img") == 0)
        return cmd_generate(sd, SD_JOB_TXT2IMG, sub, argc - 2, argv + 2);
    if (strcmp(sub, "img2img") == 0)
        return cmd_generate(sd, SD_JOB_IMG2IMG, sub, argc - 2, argv + 2);
    if (strcmp(sub, "inpaint") == 0)
        return cmd_generate(sd, SD_JOB_INPAINT, sub, argc - 2, argv + 2);
    if (strcmp(sub, "tokenize") == 0)
        return cmd_tokenize(sd, argc - 2, argv + 2);
    if (strcmp(sub, "info") == 0)
        return cmd_info(sd, argc - 2, argv + 2);
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        help(stdout);
        return 0;
    }
    return usage_error("unknown subcommand \"%s\"", sub);
}
