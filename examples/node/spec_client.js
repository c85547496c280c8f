// The Node.js example of the API documents ("Примеры использования"), runnable against a
// wagate server. Lines that differ from the documents say so in a comment starting with
// "Changed:" or "Added:"; everything else is the documents' code.
//
//   npm ci && WAGATE_API_KEY=wag_… WAGATE_BASE_URL=http://localhost:3000/api node spec_client.js
//
// Environment: WAGATE_API_KEY (required), WAGATE_BASE_URL (default
// http://localhost:3000/api), WAGATE_EXAMPLE_WEBHOOK_URL (optional), WAGATE_EXAMPLE_IMAGE_URL
// (the image to send), WAGATE_EXAMPLE_SCAN_TIMEOUT_S (default 120),
// WAGATE_EXAMPLE_MONITOR_PASSES (default 1). Exits non-zero on any failure.
const axios = require('axios');
const qrcode = require('qrcode-terminal');

// Конфигурация API
// Changed: the key and the URL come from the environment.
const apiKey = process.env.WAGATE_API_KEY;
const baseUrl = (process.env.WAGATE_BASE_URL || 'http://localhost:3000/api').replace(/\/+$/, '');
if (!apiKey) {
  console.error("Set WAGATE_API_KEY (your user's apiKey)");
  process.exit(1);
}

// Заголовки для аутентификации
const headers = {
  'x-api-key': apiKey,
  'Content-Type': 'application/json'
};

// Класс для работы с WhatsApp Multi-Instance API
class WhatsAppAPI {
  constructor(apiKey, baseUrl) {
    this.apiKey = apiKey;
    this.baseUrl = baseUrl;
    this.headers = {
      'x-api-key': apiKey,
      'Content-Type': 'application/json'
    };
  }
  
  // Создание нового инстанса
  async createInstance(name, description, webhookUrl = null) {
    try {
      const instanceData = {
        name,
        description
      };
      
      if (webhookUrl) {
        instanceData.webhookUrl = webhookUrl;
        instanceData.webhookEnabled = true;
        instanceData.notifyReceived = true;
        instanceData.notifySent = true;
      }
      
      const response = await axios.post(
        `${this.baseUrl}/instances`,
        instanceData,
        { headers: this.headers }
      );
      
      return response.data;
    } catch (error) {
      console.error('Ошибка создания инстанса:', error.response?.data || error.message);
      throw error;
    }
  }
  
  // Получение и отображение QR-кода
  async getAndDisplayQR(instanceId, maxAttempts = 10) {
    console.log('Получение QR-кода...');
    
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      try {
        const response = await axios.get(
          `${this.baseUrl}/instances/${instanceId}/qr`,
          { headers: this.headers }
        );
        
        if (response.data.qrCode) {
          // Отображаем QR-код в консоли
          qrcode.generate(response.data.qrCode);
          console.log('Отсканируйте QR-код в приложении WhatsApp');
          return true;
        }
        // Changed: axios resolves a 202 (it is a 2xx), so "still generating" is told here
        // rather than in the catch below.
        if (response.status === 202) {
          console.log('QR-код еще генерируется, ожидание...');
        }
      } catch (error) {
        if (error.response?.status === 202) {
          console.log('QR-код еще генерируется, ожидание...');
        // Added: the server answers 409 when there is no QR code because the instance is
        // linked already (a fast scan); then there is nothing to show.
        } else if (error.response?.status === 409 && (await this.checkStatus(instanceId)).ready) {
          console.log('QR-код уже отсканирован');
          return true;
        } else {
          console.log(`Попытка ${attempt+1}/${maxAttempts}: не удалось получить QR-код`);
        }
      }
      
      // Ждем перед следующей попыткой
      await new Promise(resolve => setTimeout(resolve, 3000));
    }
    
    return false;
  }
  
  // Проверка статуса инстанса
  async checkStatus(instanceId) {
    try {
      const response = await axios.get(
        `${this.baseUrl}/whatsapp/${instanceId}/status`,
        { headers: this.headers }
      );
      
      return response.data;
    } catch (error) {
      console.error('Ошибка проверки статуса:', error.response?.data || error.message);
      throw error;
    }
  }
  
  // Отправка сообщения
  async sendMessage(instanceId, phone, message) {
    try {
      const response = await axios.post(
        `${this.baseUrl}/whatsapp/${instanceId}/send`,
        { phone, message },
        { headers: this.headers }
      );
      
      return response.data;
    } catch (error) {
      console.error('Ошибка отправки сообщения:', error.response?.data || error.message);
      throw error;
    }
  }
  
  // Отправка изображения
  async sendImage(instanceId, phone, imageUrl, caption = null) {
    try {
      const data = {
        phone,
        url: imageUrl
      };
      
      if (caption) {
        data.caption = caption;
      }
      
      const response = await axios.post(
        `${this.baseUrl}/whatsapp/${instanceId}/send-media`,
        data,
        { headers: this.headers }
      );
      
      return response.data;
    } catch (error) {
      console.error('Ошибка отправки изображения:', error.response?.data || error.message);
      throw error;
    }
  }
  
  // Получение контактов
  async getContacts(instanceId) {
    try {
      const response = await axios.get(
        `${this.baseUrl}/whatsapp/${instanceId}/contacts`,
        { headers: this.headers }
      );
      
      return response.data.contacts;
    } catch (error) {
      console.error('Ошибка получения контактов:', error.response?.data || error.message);
      return [];
    }
  }
  
  // Мониторинг входящих сообщений
  async monitorMessages(instanceId, callback, interval = 5000) {
    let lastTimestamp = null;
    
    const checkMessages = async () => {
      try {
        const params = { limit: 10 };
        if (lastTimestamp) {
          params.since = lastTimestamp;
        }
        
        const response = await axios.get(
          `${this.baseUrl}/instances/${instanceId}/events`,
          { 
            headers: this.headers,
            params
          }
        );
        
        const data = response.data;
        
        for (const event of data.events) {
          if (event.type === 'message_received') {
            callback(event.data);
          }
        }
        
        if (data.events.length > 0) {
          lastTimestamp = data.latestTimestamp;
        }
      } catch (error) {
        console.error('Ошибка мониторинга сообщений:', error.message);
        // Added: a failed poll makes the example fail (exit code 1) rather than pass.
        process.exitCode = 1;
      }
    };
    
    // Запускаем интервал проверки новых сообщений
    const intervalId = setInterval(checkMessages, interval);
    
    // Возвращаем функцию для остановки мониторинга
    return () => clearInterval(intervalId);
  }
}

// Added: replaces the documents' fixed 20 s "time to scan": polls the status until the
// instance is ready, for at most `timeoutMs`.
async function waitUntilConnected(whatsapp, instanceId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await whatsapp.checkStatus(instanceId);
    if (status.ready) {
      return status;
    }
    if (Date.now() >= deadline) {
      throw new Error(`Инстанс не подключился за ${timeoutMs} мс: ${JSON.stringify(status)}`);
    }
    await new Promise(resolve => setTimeout(resolve, 500));
  }
}

// Пример использования
async function main() {
  const whatsapp = new WhatsAppAPI(apiKey, baseUrl);
  
  try {
    // Создание нового инстанса
    const instance = await whatsapp.createInstance(
      'Тестовый инстанс',
      'Создан через Node.js SDK',
      // Changed: the webhook is optional, from the environment.
      process.env.WAGATE_EXAMPLE_WEBHOOK_URL || null
    );
    
    const instanceId = instance.id;
    console.log(`Инстанс создан с ID: ${instanceId}`);
    
    // Получение и отображение QR-кода
    if (await whatsapp.getAndDisplayQR(instanceId)) {
      console.log('Ожидание сканирования QR-кода...');
      
      // Changed: instead of a fixed 20 s wait, the status is polled until connected.
      await waitUntilConnected(
        whatsapp,
        instanceId,
        1000 * Number(process.env.WAGATE_EXAMPLE_SCAN_TIMEOUT_S || '120')
      );
      
      // Проверка статуса
      const status = await whatsapp.checkStatus(instanceId);
      console.log('Статус инстанса:', status);
      
      if (status.ready) {
        // Отправка тестового сообщения
        const result = await whatsapp.sendMessage(
          instanceId,
          '79001234567',
          'Тестовое сообщение из Node.js'
        );
        
        console.log(`Сообщение отправлено, ID: ${result.id}`);

        // Added: the documents' sendImage, with an image the server can fetch.
        const imageUrl = process.env.WAGATE_EXAMPLE_IMAGE_URL;
        if (imageUrl) {
          const image = await whatsapp.sendImage(
            instanceId,
            '79001234567',
            imageUrl,
            'Тестовое изображение из Node.js'
          );
          console.log(`Изображение отправлено, ID: ${image.id}`);
        } else {
          console.log('WAGATE_EXAMPLE_IMAGE_URL не задан: изображение не отправлено');
        }

        // Added: the documents' getContacts.
        const contacts = await whatsapp.getContacts(instanceId);
        console.log(`Контактов: ${contacts.length}`);
        
        // Запуск мониторинга сообщений
        // Changed: polls every second, and stops at the first message or after
        // WAGATE_EXAMPLE_MONITOR_PASSES polls instead of after one minute.
        let gotMessage;
        const firstMessage = new Promise(resolve => { gotMessage = resolve; });
        const stopMonitoring = await whatsapp.monitorMessages(
          instanceId,
          (message) => {
            console.log(`Новое сообщение от ${message.from}: ${message.body}`);
            gotMessage();
          },
          1000
        );
        
        // Остановка мониторинга
        const passes = Number(process.env.WAGATE_EXAMPLE_MONITOR_PASSES || '1');
        let timer;
        await Promise.race([
          firstMessage,
          new Promise(resolve => { timer = setTimeout(resolve, passes * 1000 + 500); })
        ]);
        clearTimeout(timer);
        stopMonitoring();
        console.log('Мониторинг остановлен');
      } else {
        // Added: a connected instance that is not ready is a failure here.
        throw new Error(`Инстанс не готов: ${JSON.stringify(status)}`);
      }
    } else {
      // Added: without a QR code the example cannot go on.
      throw new Error('Не удалось получить QR-код');
    }
  } catch (error) {
    console.error('Произошла ошибка:', error.message);
    // Added: a failure ends with exit code 1.
    process.exitCode = 1;
  }
}

main();
