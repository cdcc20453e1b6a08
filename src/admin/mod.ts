/**
 * fly-vault-admin: manages tenant machines through the Fly Machines API.
 *
 * @module
 */
export {
  createFlyClient,
  DEFAULT_API_BASE,
  FlyApiError,
  type FlyClient,
  type FlyClientOptions,
  isNotFound,
  parseRetryAfter,
} from "./client.ts";
export * from "./schemas.ts";
export { checkApiBase } from "./api_base.ts";
export {
  checkTenantId,
  INDEX_KEY,
  machineRequest,
  parseVars,
  renderTemplate,
  TENANT_KEY,
  type TenantPlan,
} from "./template.ts";
export {
  type CreateResult,
  createTenant,
  type DeleteResult,
  deleteTenant,
  formatTenantTable,
  listTenants,
  pool,
  type TenantSummary,
  updateImage,
  type UpdateSummary,
  type UsageFact,
  usageFact,
  usageFacts,
} from "./tenant.ts";
export { parseListen, serveUsageFacts, type UsageServer } from "./serve.ts";
export { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, resolveConnection } from "./cli.ts";
export {
  type ConnectionFlags,
  createCommand,
  deleteCommand,
  exitCodeFor,
  listCommand,
  updateImageCommand,
  usageFactsCommand,
} from "./cli.ts";
