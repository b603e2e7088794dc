# The API, the worker and the migrations share this image; docker-compose.yml picks the command.
# The server has no build step: node runs the TypeScript sources through tsx's loader (`--import
# tsx`, a runtime dependency), in one process; only the web page is built (first stage). Commands start node itself, never npm: as PID 1 node gets
# `docker stop`'s SIGTERM and drains; npm would pass it to a shell that dies and leaves node behind.
# The web page (web/) is built with the dev dependencies (Vite, the GraphQL codegen) in a stage of
# its own; the image takes only its output.
FROM node:20-bookworm-slim AS web
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run -s web:build

FROM node:20-bookworm-slim

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so a source-only change reuses this layer.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# Sources stay owned by root (read-only for the app); .dockerignore keeps local state out.
COPY . .
COPY --from=web /app/web/dist ./web/dist

# STORAGE_DIR defaults to .data/files under the working dir: the API serves what the worker writes
# there. Created here owned by `node`, so a named volume mounted on it starts out writable too.
RUN mkdir -p /app/.data/files && chown -R node:node /app/.data

USER node
EXPOSE 4000
CMD ["node", "--import", "tsx", "src/main/api.ts"]
