/* broker: GET /api/swagger.json, a Swagger 2.0 document of what this node
 * serves (spec/horde-api.md §0).
 *
 * Built on each call from three sources, so it cannot drift from the node:
 *   - the paths are every route registered in the node, by any plugin
 *     (api->routes_each): a route nobody described still appears, with its
 *     path parameters and a generic answer;
 *   - the request bodies of generate/pop/submit/worker PUT are the tables
 *     the broker's validators check them with (validate.c,
 *     br_schema_definitions), under the horde's model names
 *     (GenerationInputStable, PopInputStable, SubmitInputStable, ...);
 *   - the answers are the response models below, with the horde's names
 *     (RequestAsync, RequestStatusStable, GenerationPayloadStable,
 *     RequestError, ...), and the descriptions table says which route answers
 *     with which.
 * basePath is "/api" as on the horde ("/v2/generate/async"); routes outside
 * /api (images, uploads, /register) are listed under "x-node-paths" with
 * their full path, since Swagger paths are relative to basePath. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "moderation.h"

/* The horde's response models (and a few of ours), as JSON Schema. */
static const char response_models[] =
    "{"
    "\"RequestError\": {\"type\": \"object\", \"properties\": {"
    "  \"message\": {\"type\": \"string\"}, \"rc\": {\"type\": \"string\"}}},"
    "\"RequestValidationError\": {\"type\": \"object\", \"properties\": {"
    "  \"message\": {\"type\": \"string\"}, \"rc\": {\"type\": \"string\"},"
    "  \"errors\": {\"type\": \"object\"}}},"
    "\"RequestAsync\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"string\"}, \"kudos\": {\"type\": \"number\"},"
    "  \"message\": {\"type\": \"string\"}, \"warnings\": {\"type\": \"array\", "
    "  \"items\": {\"$ref\": \"#/definitions/RequestSingleWarning\"}}}},"
    "\"RequestSingleWarning\": {\"type\": \"object\", \"properties\": {"
    "  \"code\": {\"type\": \"string\"}, \"message\": {\"type\": \"string\"}}},"
    "\"RequestStatusCheck\": {\"type\": \"object\", \"properties\": {"
    "  \"finished\": {\"type\": \"integer\"}, \"processing\": {\"type\": \"integer\"},"
    "  \"restarted\": {\"type\": \"integer\"}, \"waiting\": {\"type\": \"integer\"},"
    "  \"done\": {\"type\": \"boolean\"}, \"faulted\": {\"type\": \"boolean\"},"
    "  \"wait_time\": {\"type\": \"integer\"}, \"queue_position\": {\"type\": \"integer\"},"
    "  \"kudos\": {\"type\": \"number\"}, \"is_possible\": {\"type\": \"boolean\"}}},"
    "\"RequestStatusStable\": {\"allOf\": [{\"$ref\": \"#/definitions/RequestStatusCheck\"},"
    "  {\"type\": \"object\", \"properties\": {\"generations\": {\"type\": \"array\","
    "  \"items\": {\"$ref\": \"#/definitions/GenerationStable\"}},"
    "  \"shared\": {\"type\": \"boolean\"}}}]},"
    "\"GenerationStable\": {\"type\": \"object\", \"properties\": {"
    "  \"img\": {\"type\": \"string\"}, \"seed\": {\"type\": \"string\"},"
    "  \"id\": {\"type\": \"string\"}, \"censored\": {\"type\": \"boolean\"},"
    "  \"worker_id\": {\"type\": \"string\"}, \"worker_name\": {\"type\": \"string\"},"
    "  \"model\": {\"type\": \"string\"}, \"state\": {\"type\": \"string\"},"
    "  \"gen_metadata\": {\"type\": \"array\", \"items\": "
    "  {\"$ref\": \"#/definitions/GenerationMetadataStable\"}}}},"
    "\"ModelPayloadStable\": {\"type\": \"object\", \"properties\": {"
    "  \"prompt\": {\"type\": \"string\"}, \"ddim_steps\": {\"type\": \"integer\"},"
    "  \"n_iter\": {\"type\": \"integer\"}, \"seed\": {\"type\": \"string\"},"
    "  \"use_nsfw_censor\": {\"type\": \"boolean\"}, \"sampler_name\": {\"type\": \"string\"},"
    "  \"cfg_scale\": {\"type\": \"number\"}, \"width\": {\"type\": \"integer\"},"
    "  \"height\": {\"type\": \"integer\"}}},"
    "\"NoValidRequestFoundStable\": {\"type\": \"object\", \"additionalProperties\": "
    "  {\"type\": \"integer\"}},"
    "\"GenerationPayloadStable\": {\"type\": \"object\", \"properties\": {"
    "  \"payload\": {\"$ref\": \"#/definitions/ModelPayloadStable\"},"
    "  \"id\": {\"type\": \"string\"}, \"ids\": {\"type\": \"array\", \"items\": "
    "  {\"type\": \"string\"}}, \"model\": {\"type\": \"string\"}, \"ttl\": {\"type\": \"integer\"},"
    "  \"source_image\": {\"type\": \"string\"}, \"source_processing\": {\"type\": \"string\"},"
    "  \"source_mask\": {\"type\": \"string\"}, \"extra_source_images\": {\"type\": \"array\","
    "  \"items\": {\"$ref\": \"#/definitions/ExtraSourceImage\"}},"
    "  \"r2_upload\": {\"type\": \"string\"}, \"r2_uploads\": {\"type\": \"array\", "
    "  \"items\": {\"type\": \"string\"}}, \"messages\": {\"type\": \"array\", "
    "  \"items\": {\"type\": \"object\"}},"
    "  \"skipped\": {\"$ref\": \"#/definitions/NoValidRequestFoundStable\"}}},"
    "\"GenerationSubmitted\": {\"type\": \"object\", \"properties\": {"
    "  \"reward\": {\"type\": \"number\"}}},"
    "\"DryRunKudos\": {\"type\": \"object\", \"properties\": {\"kudos\": {\"type\": \"number\"}}},"
    "\"WorkerDetails\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"string\"}, \"name\": {\"type\": \"string\"},"
    "  \"type\": {\"type\": \"string\"}, \"online\": {\"type\": \"boolean\"},"
    "  \"models\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}},"
    "\"ModifyWorker\": {\"type\": \"object\"},"
    "\"UserDetails\": {\"type\": \"object\", \"properties\": {"
    "  \"username\": {\"type\": \"string\"}, \"id\": {\"type\": \"integer\"},"
    "  \"kudos\": {\"type\": \"number\"}}},"
    "\"HordeHeartbeat\": {\"type\": \"object\", \"properties\": {"
    "  \"message\": {\"type\": \"string\"}, \"version\": {\"type\": \"string\"}}},"
    "\"ActiveModel\": {\"type\": \"object\", \"properties\": {"
    "  \"name\": {\"type\": \"string\"}, \"count\": {\"type\": \"integer\"},"
    "  \"performance\": {\"type\": \"number\"}, \"queued\": {\"type\": \"number\"},"
    "  \"jobs\": {\"type\": \"number\"}, \"eta\": {\"type\": \"integer\"},"
    "  \"type\": {\"type\": \"string\"}}},"
    "\"HordePerformance\": {\"type\": \"object\", \"properties\": {"
    "  \"queued_requests\": {\"type\": \"integer\"}, \"worker_count\": {\"type\": \"integer\"},"
    "  \"thread_count\": {\"type\": \"integer\"}, \"queued_megapixelsteps\": {\"type\": \"number\"},"
    "  \"past_minute_megapixelsteps\": {\"type\": \"number\"}}},"
    "\"FilterDetails\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"integer\"}, \"regex\": {\"type\": \"string\"},"
    "  \"filter_type\": {\"type\": \"integer\", \"minimum\": 10, \"maximum\": 29},"
    "  \"description\": {\"type\": \"string\"}, \"replacement\": {\"type\": \"string\"},"
    "  \"user\": {\"type\": \"string\"}}},"
    "\"PutNewFilter\": {\"type\": \"object\", \"required\": [\"regex\", \"filter_type\"],"
    "  \"properties\": {\"regex\": {\"type\": \"string\"},"
    "  \"filter_type\": {\"type\": \"integer\", \"minimum\": 10, \"maximum\": 29},"
    "  \"description\": {\"type\": \"string\"}, \"replacement\": {\"type\": \"string\"}}},"
    "\"PatchExistingFilter\": {\"type\": \"object\", \"properties\": {"
    "  \"regex\": {\"type\": \"string\"},"
    "  \"filter_type\": {\"type\": \"integer\", \"minimum\": 10, \"maximum\": 29},"
    "  \"description\": {\"type\": \"string\"}, \"replacement\": {\"type\": \"string\"}}},"
    "\"FilterCheckPayload\": {\"type\": \"object\", \"required\": [\"prompt\"], \"properties\": {"
    "  \"prompt\": {\"type\": \"string\"}, \"filter_type\": {\"type\": \"integer\"}}},"
    "\"FilterPromptSuspicion\": {\"type\": \"object\", \"properties\": {"
    "  \"suspicion\": {\"type\": \"integer\"}, \"matches\": {\"type\": \"array\", "
    "  \"items\": {\"type\": \"string\"}}}},"
    "\"FilterRegex\": {\"type\": \"object\", \"properties\": {"
    "  \"filter_type\": {\"type\": \"integer\"}, \"regex\": {\"type\": \"string\"}}},"
    "\"AddTimeoutIPInput\": {\"type\": \"object\", \"required\": [\"ipaddr\", \"hours\"],"
    "  \"properties\": {\"ipaddr\": {\"type\": \"string\", \"minLength\": 7, \"maxLength\": 40},"
    "  \"hours\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 720}}},"
    "\"DeleteTimeoutIPInput\": {\"type\": \"object\", \"required\": [\"ipaddr\"],"
    "  \"properties\": {\"ipaddr\": {\"type\": \"string\", \"minLength\": 7, \"maxLength\": 40}}},"
    "\"AddWorkerTimeout\": {\"type\": \"object\", \"required\": [\"days\"], \"properties\": {"
    "  \"days\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 30}}},"
    "\"IPTimeout\": {\"type\": \"object\", \"properties\": {"
    "  \"ipaddr\": {\"type\": \"string\"}, \"seconds\": {\"type\": \"integer\"}}},"
    "\"SimpleResponse\": {\"type\": \"object\", \"properties\": {"
    "  \"message\": {\"type\": \"string\"}}},"
    "\"SinglePeriodImgStat\": {\"type\": \"object\", \"properties\": {"
    "  \"images\": {\"type\": \"integer\"}, \"ps\": {\"type\": \"integer\"}}},"
    "\"StatsImgTotals\": {\"type\": \"object\", \"properties\": {"
    "  \"minute\": {\"$ref\": \"#/definitions/SinglePeriodImgStat\"},"
    "  \"hour\": {\"$ref\": \"#/definitions/SinglePeriodImgStat\"},"
    "  \"day\": {\"$ref\": \"#/definitions/SinglePeriodImgStat\"},"
    "  \"month\": {\"$ref\": \"#/definitions/SinglePeriodImgStat\"},"
    "  \"total\": {\"$ref\": \"#/definitions/SinglePeriodImgStat\"}}},"
    "\"ImgModelStats\": {\"type\": \"object\", \"properties\": {"
    "  \"day\": {\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}},"
    "  \"month\": {\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}},"
    "  \"total\": {\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}}},"
    "\"Newspiece\": {\"type\": \"object\", \"properties\": {"
    "  \"date_published\": {\"type\": \"string\"}, \"newspiece\": {\"type\": \"string\"},"
    "  \"importance\": {\"type\": \"string\"}, \"tags\": {\"type\": \"array\", \"items\": "
    "  {\"type\": \"string\"}}, \"title\": {\"type\": \"string\"}, \"more_info_urls\": "
    "  {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}},"
    "\"StyleExample\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"string\"}, \"url\": {\"type\": \"string\"},"
    "  \"primary\": {\"type\": \"boolean\"}}},"
    "\"StyleStable\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"string\"}, \"name\": {\"type\": \"string\"},"
    "  \"info\": {\"type\": \"string\"}, \"prompt\": {\"type\": \"string\"},"
    "  \"params\": {\"$ref\": \"#/definitions/ModelGenerationInputStable\"},"
    "  \"public\": {\"type\": \"boolean\"}, \"nsfw\": {\"type\": \"boolean\"},"
    "  \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "  \"models\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "  \"creator\": {\"type\": \"string\"}, \"use_count\": {\"type\": \"integer\"},"
    "  \"examples\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/definitions/StyleExample\"}}}},"
    "\"InputStyle\": {\"type\": \"object\", \"required\": [\"name\", \"models\"], \"properties\": {"
    "  \"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 100},"
    "  \"info\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 1000},"
    "  \"prompt\": {\"type\": \"string\", \"minLength\": 7, \"default\": \"{p}{np}\"},"
    "  \"params\": {\"$ref\": \"#/definitions/ModelGenerationInputStable\"},"
    "  \"public\": {\"type\": \"boolean\", \"default\": true},"
    "  \"nsfw\": {\"type\": \"boolean\", \"default\": false},"
    "  \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "  \"models\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}},"
    "\"PatchStyle\": {\"type\": \"object\", \"properties\": {"
    "  \"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 100},"
    "  \"info\": {\"type\": \"string\"}, \"prompt\": {\"type\": \"string\"},"
    "  \"params\": {\"$ref\": \"#/definitions/ModelGenerationInputStable\"},"
    "  \"public\": {\"type\": \"boolean\"}, \"nsfw\": {\"type\": \"boolean\"},"
    "  \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "  \"models\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}},"
    "\"StyleModify\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"string\"}, \"message\": {\"type\": \"string\"},"
    "  \"warnings\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/definitions/RequestSingleWarning\"}}}},"
    "\"InputStyleExample\": {\"type\": \"object\", \"properties\": {"
    "  \"url\": {\"type\": \"string\", \"minLength\": 10, \"maxLength\": 1024},"
    "  \"primary\": {\"type\": \"boolean\"}}},"
    "\"CollectionStyle\": {\"type\": \"object\", \"properties\": {"
    "  \"name\": {\"type\": \"string\"}, \"id\": {\"type\": \"string\"}}},"
    "\"CollectionDetails\": {\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"string\"}, \"name\": {\"type\": \"string\"},"
    "  \"type\": {\"type\": \"string\"}, \"info\": {\"type\": \"string\"},"
    "  \"public\": {\"type\": \"boolean\"}, \"use_count\": {\"type\": \"integer\"},"
    "  \"styles\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/definitions/CollectionStyle\"}}}},"
    "\"InputCollection\": {\"type\": \"object\", \"properties\": {"
    "  \"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 100},"
    "  \"info\": {\"type\": \"string\"}, \"public\": {\"type\": \"boolean\"},"
    "  \"styles\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}},"
    "\"TestUserInput\": {\"type\": \"object\", \"properties\": {"
    "  \"username\": {\"type\": \"string\"}, \"oauth_id\": {\"type\": \"string\"},"
    "  \"moderator\": {\"type\": \"boolean\"}, \"trusted\": {\"type\": \"boolean\"},"
    "  \"kudos\": {\"type\": \"integer\"}}},"
    "\"TestUserDetails\": {\"type\": \"object\", \"properties\": {"
    "  \"api_key\": {\"type\": \"string\"}, \"user_id\": {\"type\": \"integer\"},"
    "  \"username\": {\"type\": \"string\"}, \"alias\": {\"type\": \"string\"},"
    "  \"kudos\": {\"type\": \"number\"}, \"trusted\": {\"type\": \"boolean\"},"
    "  \"moderator\": {\"type\": \"boolean\"}, \"created\": {\"type\": \"boolean\"}}}"
    "}";

/* What we say about the routes we know. `query`: "name:type name:type".
 * `body`, `resp`: model names; `list`: the answer is an array of resp. */
typedef struct op_desc {
    unsigned method;
    const char *pattern;
    const char *tag, *summary;
    bool auth;      /* takes the apikey header */
    const char *query;
    const char *body;
    int status;     /* success status (0: 200) */
    const char *resp;
    bool list;
} op_desc;

static const op_desc ops[] = {
    {HN_POST, "/api/v2/generate/async", "v2", "Initiate an asynchronous request to generate images",
     true, NULL, "GenerationInputStable", 202, "RequestAsync", false},
    {HN_GET, "/api/v2/generate/check/{id}", "v2", "Retrieve the status of an asynchronous request",
     false, NULL, NULL, 0, "RequestStatusCheck", false},
    {HN_GET, "/api/v2/generate/status/{id}", "v2",
     "Retrieve the full status of an asynchronous request", false, NULL, NULL, 0,
     "RequestStatusStable", false},
    {HN_DELETE, "/api/v2/generate/status/{id}", "v2", "Cancel an unfinished request", false, NULL,
     NULL, 0, "RequestStatusStable", false},
    {HN_POST, "/api/v2/generate/pop", "v2", "Check if there are generation requests queued",
     true, NULL, "PopInputStable", 0, "GenerationPayloadStable", false},
    {HN_POST, "/api/v2/generate/submit", "v2", "Submit a generated image", true, NULL,
     "SubmitInputStable", 0, "GenerationSubmitted", false},
    {HN_GET, "/api/v2/workers", "v2", "A list of the workers seen recently", false,
     "type:string name:string", NULL, 0, "WorkerDetails", true},
    {HN_GET, "/api/v2/workers/{id}", "v2", "Details of a worker", false, NULL, NULL, 0,
     "WorkerDetails", false},
    {HN_PUT, "/api/v2/workers/{id}", "v2", "Change a worker", true, NULL, "ModifyWorkerInput", 0,
     "ModifyWorker", false},
    {HN_GET, "/api/v2/workers/name/{name}", "v2", "Details of a worker by name", false, NULL,
     NULL, 0, "WorkerDetails", false},
    {HN_GET, "/api/v2/users/{id}", "v2", "Details of a user", false, NULL, NULL, 0,
     "UserDetails", false},
    {HN_GET, "/api/v2/find_user", "v2", "The user an API key belongs to", true, NULL, NULL, 0,
     "UserDetails", false},
    {HN_GET, "/api/v2/status/heartbeat", "v2", "Is the horde up", false, NULL, NULL, 0,
     "HordeHeartbeat", false},
    {HN_GET, "/api/v2/status/models", "v2", "Models served now", false,
     "type:string min_count:integer max_count:integer model_state:string", NULL, 0,
     "ActiveModel", true},
    {HN_GET, "/api/v2/status/models/{name}", "v2", "One model's status", false, NULL, NULL, 0,
     "ActiveModel", true},
    {HN_GET, "/api/v2/status/performance", "v2", "The horde's load", false, NULL, NULL, 0,
     "HordePerformance", false},
    {HN_GET, "/api/v2/status/news", "v2", "The horde's news", false, NULL, NULL, 0, "Newspiece",
     true},
    {HN_GET, "/api/v2/filters", "v2", "Prompt filters (moderators)", true,
     "filter_type:integer contains:string", NULL, 0, "FilterDetails", true},
    {HN_PUT, "/api/v2/filters", "v2", "Add a prompt filter (moderators)", true, NULL,
     "PutNewFilter", 0, "FilterDetails", false},
    {HN_POST, "/api/v2/filters", "v2", "Check a prompt against the filters (moderators)", true,
     NULL, "FilterCheckPayload", 0, "FilterPromptSuspicion", false},
    {HN_GET, "/api/v2/filters/regex", "v2", "The filters joined per type (moderators)", true,
     "filter_type:integer", NULL, 0, "FilterRegex", true},
    {HN_GET, "/api/v2/filters/{filter_id}", "v2", "One prompt filter (moderators)", true, NULL,
     NULL, 0, "FilterDetails", false},
    {HN_PATCH, "/api/v2/filters/{filter_id}", "v2", "Change a prompt filter (moderators)", true,
     NULL, "PatchExistingFilter", 0, "FilterDetails", false},
    {HN_DELETE, "/api/v2/filters/{filter_id}", "v2", "Delete a prompt filter (moderators)", true,
     NULL, NULL, 0, "SimpleResponse", false},
    {HN_GET, "/api/v2/operations/ipaddr", "v2", "CIDR blocks in timeout (moderators)", true,
     NULL, NULL, 0, "IPTimeout", true},
    {HN_POST, "/api/v2/operations/ipaddr", "v2", "Put an IP or CIDR block in timeout "
     "(moderators)", true, NULL, "AddTimeoutIPInput", 0, "SimpleResponse", false},
    {HN_DELETE, "/api/v2/operations/ipaddr", "v2", "Lift an IP timeout (moderators)", true,
     NULL, "DeleteTimeoutIPInput", 0, "SimpleResponse", false},
    {HN_GET, "/api/v2/operations/ipaddr/{ipaddr}", "v2", "Timeouts covering an IP (moderators)",
     true, NULL, NULL, 0, "IPTimeout", true},
    {HN_PUT, "/api/v2/operations/block_worker_ipaddr/{worker_id}", "v2",
     "Put a worker's IP in timeout (moderators)", true, NULL, "AddWorkerTimeout", 0,
     "SimpleResponse", false},
    {HN_DELETE, "/api/v2/operations/block_worker_ipaddr/{worker_id}", "v2",
     "Lift a worker's IP timeout (moderators)", true, NULL, NULL, 0, "SimpleResponse", false},
    {HN_GET, "/api/v2/stats/img/totals", "v2", "Images generated per period", false, NULL,
     NULL, 0, "StatsImgTotals", false},
    {HN_GET, "/api/v2/stats/img/models", "v2", "Images generated per model", false,
     "model_state:string", NULL, 0, "ImgModelStats", false},
    {HN_GET, "/api/v2/styles/image", "v2", "Image styles", false,
     "sort:string page:integer tag:string model:string", NULL, 0, "StyleStable", true},
    {HN_POST, "/api/v2/styles/image", "v2", "Create an image style (trusted or customizer)",
     true, NULL, "InputStyle", 0, "StyleModify", false},
    {HN_GET, "/api/v2/styles/image/{style_id}", "v2", "One image style", false, NULL, NULL, 0,
     "StyleStable", false},
    {HN_PATCH, "/api/v2/styles/image/{style_id}", "v2", "Change an image style (its owner)",
     true, NULL, "PatchStyle", 0, "StyleModify", false},
    {HN_DELETE, "/api/v2/styles/image/{style_id}", "v2",
     "Delete an image style (owner or moderator)", true, NULL, NULL, 0, "SimpleResponse", false},
    {HN_GET, "/api/v2/styles/image_by_name/{style_name}", "v2", "One image style by name", false,
     NULL, NULL, 0, "StyleStable", false},
    {HN_POST, "/api/v2/styles/image/{style_id}/example", "v2", "Add an example image", true,
     NULL, "InputStyleExample", 0, "StyleModify", false},
    {HN_PATCH, "/api/v2/styles/image/{style_id}/example/{example_id}", "v2",
     "Change an example image", true, NULL, "InputStyleExample", 0, "StyleModify", false},
    {HN_DELETE, "/api/v2/styles/image/{style_id}/example/{example_id}", "v2",
     "Delete an example image", true, NULL, NULL, 0, "SimpleResponse", false},
    {HN_GET, "/api/v2/collections", "v2", "Style collections", false,
     "sort:string page:integer type:string", NULL, 0, "CollectionDetails", true},
    {HN_POST, "/api/v2/collections", "v2", "Create a style collection", true, NULL,
     "InputCollection", 0, "StyleModify", false},
    {HN_GET, "/api/v2/collections/{collection_id}", "v2", "One style collection", false, NULL,
     NULL, 0, "CollectionDetails", false},
    {HN_PATCH, "/api/v2/collections/{collection_id}", "v2", "Change a style collection", true,
     NULL, "InputCollection", 0, "StyleModify", false},
    {HN_DELETE, "/api/v2/collections/{collection_id}", "v2", "Delete a style collection", true,
     NULL, NULL, 0, "SimpleResponse", false},
    {HN_GET, "/api/v2/collection_by_name/{collection_name}", "v2", "One collection by name",
     false, NULL, NULL, 0, "CollectionDetails", false},
    {HN_POST, "/api/v2/dev/test-user", "v2", "Make a test user (test nodes only, loopback)",
     false, NULL, "TestUserInput", 201, "TestUserDetails", false},
};

static const op_desc *find_op(const char *pattern, unsigned method) {
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (ops[i].method == method && strcmp(ops[i].pattern, pattern) == 0)
            return &ops[i];
    return NULL;
}

static json_t *ref(const char *model) {
    char text[160];
    snprintf(text, sizeof(text), "#/definitions/%s", model);
    return json_pack("{s:s}", "$ref", text);
}

/* One operation object for method on pattern. */
static json_t *operation(const char *pattern, unsigned method, const char *plugin) {
    const op_desc *d = find_op(pattern, method);
    json_t *params = json_array();
    /* path parameters, from the pattern itself */
    for (const char *p = strchr(pattern, '{'); p; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        if (!end)
            break;
        json_t *name = json_stringn(p + 1, (size_t)(end - p - 1));
        json_array_append_new(params, json_pack("{s:o, s:s, s:b, s:s}", "name", name, "in",
                                                "path", "required", 1, "type", "string"));
    }
    if (d && d->auth)
        json_array_append_new(params,
                              json_pack("{s:s, s:s, s:b, s:s, s:s}", "name", "apikey", "in",
                                        "header", "required", 0, "type", "string",
                                        "description", "The user's API key"));
    json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:s, s:s}", "name", "Client-Agent",
                                            "in", "header", "required", 0, "type", "string",
                                            "default", "unknown:0:unknown"));
    if (d && d->query) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", d->query);
        char *save = NULL;
        for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
            char *colon = strchr(tok, ':');
            if (!colon)
                continue;
            *colon = '\0';
            json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:s}", "name", tok, "in",
                                                    "query", "required", 0, "type", colon + 1));
        }
    }
    if (d && d->body)
        json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:o}", "name", "payload", "in",
                                                "body", "required", 1, "schema", ref(d->body)));
    json_t *responses = json_object();
    char status[8];
    snprintf(status, sizeof(status), "%d", d && d->status ? d->status : 200);
    json_t *ok = json_pack("{s:s}", "description", "Success");
    if (d && d->resp)
        json_object_set_new(ok, "schema",
                            d->list ? json_pack("{s:s, s:o}", "type", "array", "items",
                                                ref(d->resp))
                                    : ref(d->resp));
    json_object_set_new(responses, status, ok);
    if (d && d->body)
        json_object_set_new(responses, "400",
                            json_pack("{s:s, s:o}", "description", "Validation Error", "schema",
                                      ref("RequestValidationError")));
    if (d && d->auth) {
        json_object_set_new(responses, "401",
                            json_pack("{s:s, s:o}", "description", "Invalid API Key", "schema",
                                      ref("RequestError")));
        json_object_set_new(responses, "403",
                            json_pack("{s:s, s:o}", "description", "Access Denied", "schema",
                                      ref("RequestError")));
    }
    json_object_set_new(responses, "429",
                        json_pack("{s:s, s:o}", "description", "Rate limit exceeded", "schema",
                                  ref("RequestError")));
    char summary[200];
    if (d)
        snprintf(summary, sizeof(summary), "%s", d->summary);
    else
        snprintf(summary, sizeof(summary), "Served by the %s plugin", plugin);
    char op_id[300];
    snprintf(op_id, sizeof(op_id), "%s_%s", method == HN_GET ? "get" : method == HN_POST ? "post"
                                            : method == HN_PUT ? "put" : method == HN_PATCH ? "patch"
                                            : "delete", pattern);
    for (char *c = op_id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '_';
    return json_pack("{s:[s], s:s, s:s, s:o, s:o, s:[s]}", "tags", d ? d->tag : plugin, "summary",
                     summary, "operationId", op_id, "parameters", params, "responses", responses,
                     "produces", "application/json");
}

typedef struct walk_ctx {
    json_t *paths, *other;
} walk_ctx;

static void add_route(void *arg, unsigned methods, const char *pattern, const char *plugin) {
    walk_ctx *w = arg;
    static const struct {
        unsigned bit;
        const char *name;
    } verbs[] = {{HN_GET, "get"}, {HN_POST, "post"}, {HN_PUT, "put"}, {HN_PATCH, "patch"},
                 {HN_DELETE, "delete"}, {HN_HEAD, "head"}, {HN_OPTIONS, "options"}};
    bool api_path = strncmp(pattern, "/api/", 5) == 0;
    json_t *where = api_path ? w->paths : w->other;
    const char *key = api_path ? pattern + 4 : pattern;
    json_t *item = json_object_get(where, key);
    if (!item) {
        item = json_object();
        json_object_set_new(where, key, item);
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (methods & verbs[i].bit)
            json_object_set_new(item, verbs[i].name, operation(pattern, verbs[i].bit, plugin));
}

void br_route_swagger(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    json_error_t je;
    json_t *defs = json_loads(response_models, 0, &je);
    if (!defs) {
        api->log(b->self, HN_LOG_ERROR, "swagger models: %s (line %d)", je.text, je.line);
        br_fail(b, req, 500, "InternalServerError", "The swagger document is broken.");
        return;
    }
    br_schema_definitions(defs);
    walk_ctx w = {json_object(), json_object()};
    if (HN_API_HAS(api, routes_each))
        api->routes_each(add_route, &w);
    json_t *doc = json_pack(
        "{s:s, s:s, s:{s:s, s:s, s:s}, s:[s], s:[s], s:o, s:o, s:o, s:{s:{s:s, s:s, s:s}}, "
        "s:[{s:s, s:s}]}",
        "swagger", "2.0", "basePath", "/api", "info", "title", "AI Horde", "version", "2.5",
        "description", "horde-node: the AI Horde v2 API (wire-compatible with the public horde)",
        "consumes", "application/json", "produces", "application/json", "paths", w.paths,
        "x-node-paths", w.other, "definitions", defs, "securityDefinitions", "apikey", "type",
        "apiKey", "in", "header", "name", "apikey", "tags", "name", "v2", "description",
        "Version 2");
    api->respond_json(req, 200, doc);
}
