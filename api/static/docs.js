// Starts Swagger UI (loaded by docs.html from /docs/assets) on Sieve's OpenAPI document.
import { apiKey } from "/static/common.js";

const ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  // BaseLayout: no top bar with a box for loading some other API's document.
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 0,
  // The key typed on the search or admin page (this tab's sessionStorage) is
  // used here too; Authorize sets another one.
  onComplete: () => {
    const key = apiKey();
    if (key) ui.preauthorizeApiKey("apiKey", key);
  },
});
window.ui = ui;
