# The API, the worker and the migrations share this image; docker-compose.yml picks the command.
# There is no build step: tsx (a runtime dependency) runs the TypeScript sources directly.
FROM node:20-bookworm-slim

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so a source-only change reuses this layer.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# Sources stay owned by root (read-only for the app); .dockerignore keeps local state out.
COPY . .

# STORAGE_DIR defaults to .data/files under the working dir: the API serves what the worker writes
# there. Created here owned by `node`, so a named volume mounted on it starts out writable too.
RUN mkdir -p /app/.data/files && chown -R node:node /app/.data

USER node
EXPOSE 4000
CMD ["npm", "run", "api"]
