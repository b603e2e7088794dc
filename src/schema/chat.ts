import type { ObjectRef } from '@pothos/core';
import { z } from 'zod';
import type { Config } from '../config';
import type { ChatCharacter, ChatExchangeView } from '../chat/service';
import type { GenerationRow } from '../generation/repository';
import type { Builder, BuilderTypes } from './builder';
import { requireUser } from './builder';
import type { ConnectionTypes } from './connection';
import type { ProgressTypes } from './progress';

export function addChatTypes(
  builder: Builder,
  types: ProgressTypes,
  connections: ConnectionTypes,
  GenerationRef: ObjectRef<BuilderTypes, GenerationRow>,
  limits: Config['limits'],
) {
  const ChatExchange = builder.objectRef<ChatExchangeView>('ChatExchange').implement({
    description: "One exchange of a chat: the prompt the user sent a character and the images that answered it.",
    fields: (t) => ({
      id: t.exposeID('id'),
      characterName: t.exposeString('character_name'),
      prompt: t.exposeString('prompt'),
      generationId: t.exposeID('generation_id'),
      generation: t.field({
        type: GenerationRef,
        description: 'The generation that made the images, with all its settings.',
        resolve: async (e, _a, ctx) => {
          requireUser(ctx);
          const g = await ctx.loaders.visibleGenerations.load(e.generation_id);
          if (!g) throw new Error(`generation ${e.generation_id} of chat exchange ${e.id} is missing`);
          return g;
        },
      }),
      images: t.field({ type: [types.GeneratedImage], resolve: (e) => e.images }),
      createdAt: t.expose('created_at', { type: 'DateTime', description: 'When the images were ready.' }),
    }),
  });

  const Character = builder.objectRef<ChatCharacter>('Character').implement({
    description: 'A character the caller has chatted with.',
    fields: (t) => ({
      name: t.exposeString('name'),
      lastExchange: t.field({ type: ChatExchange, resolve: (c) => c.lastExchange }),
    }),
  });

  const ChatExchangeConnection = connections.connection('ChatExchange', ChatExchange);

  builder.queryField('chatHistory', (t) =>
    t.field({
      type: ChatExchangeConnection,
      description: "The caller's chat with a character, newest exchange first, a page at a time.",
      args: {
        characterName: t.arg
          .string({ required: true })
          .validate(
            z
              .string()
              .trim()
              .min(1, 'characterName must not be empty')
              .max(limits.characterNameMaxLength, `characterName must be at most ${limits.characterNameMaxLength} characters`),
          ),
        ...connections.pageArgs(t.arg, 'chat'),
      },
      resolve: (_r, args, ctx) => ctx.chat.history(requireUser(ctx), args.characterName, connections.page(args)),
    }),
  );

  builder.queryField('characters', (t) =>
    t.field({
      type: [Character],
      description: "The characters the caller has chatted with, each with its last exchange, the most recent chat first.",
      resolve: (_r, _a, ctx) => ctx.chat.characters(requireUser(ctx)),
    }),
  );
}
